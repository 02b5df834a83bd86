//! The `portcullis` binary; see [`portcullis::cli`].

/// mimalloc rather than the system allocator: a request allocates and frees many small buffers
/// across threads, which glibc's malloc served at about a tenth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
