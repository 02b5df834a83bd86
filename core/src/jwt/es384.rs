//! ES384 (ECDSA on P-384 with SHA-384) for jwt-compact, which ships ES256 only.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

/// The `ES384` JWS algorithm (RFC 7518 §3.4).
#[derive(Debug, Clone, Copy, Default)]
pub struct Es384;

/// A JWS ES384 signature: `r || s`, 48 bytes each.
#[derive(Debug, Clone)]
pub struct Es384Signature(Signature);

impl AlgorithmSignature for Es384Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(96);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Signature::from_slice(slice)
            .map(Es384Signature)
            .map_err(|e| anyhow::anyhow!(e))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

impl Algorithm for Es384 {
    type SigningKey = SigningKey;
    type VerifyingKey = VerifyingKey;
    type Signature = Es384Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES384")
    }

    fn sign(&self, signing_key: &SigningKey, message: &[u8]) -> Es384Signature {
        Es384Signature(signing_key.sign(message))
    }

    fn verify_signature(
        &self,
        signature: &Es384Signature,
        key: &VerifyingKey,
        message: &[u8],
    ) -> bool {
        key.verify(message, &signature.0).is_ok()
    }
}
