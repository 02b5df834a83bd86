//! The `portcullis` binary; see [`portcullis::cli`].

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
