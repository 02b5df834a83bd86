//! Authorisation: does the authenticated caller hold every scope and claim the route requires?
//! Pure and table-tested; a [`Permit`] is the proof later phases need.

use serde_json::Value;

use crate::authn::Principal;
use crate::config::{Route, RouteAuth};
use crate::problem::{ForbiddenReason, Reject};

/// Proof that a request passed authentication and authorisation for its route.
#[derive(Debug, Clone, Copy)]
pub struct Permit<'a> {
    principal: Option<&'a Principal>,
}

impl<'a> Permit<'a> {
    /// The consumer, if the route is authenticated.
    pub fn consumer(&self) -> Option<&'a str> {
        self.principal.map(|p| p.consumer.as_str())
    }
}

/// Check the route's scopes and claims against `principal`.
pub(crate) fn check<'a>(
    route: &Route,
    principal: Option<&'a Principal>,
) -> Result<Permit<'a>, Reject> {
    let RouteAuth::Required { scopes, claims, .. } = &route.auth else {
        return Ok(Permit { principal: None });
    };
    // authenticate() returns a principal for every authenticated route; be explicit anyway.
    let Some(p) = principal else {
        return Err(Reject::new(
            ForbiddenReason::NoPrincipal,
            "This route requires an authenticated caller.",
        ));
    };
    if let Some(missing) = scopes.iter().find(|s| !p.scopes.contains(s)) {
        return Err(Reject::new(
            ForbiddenReason::Scope,
            format!(
                "The credentials lack the scope \"{}\".",
                crate::log::clip(missing)
            ),
        ));
    }
    for (name, want) in claims {
        if !claim_satisfied(p.claims.as_ref().and_then(|c| c.get(name)), want) {
            return Err(Reject::new(
                ForbiddenReason::Claim,
                format!(
                    "The credentials do not carry the required claim \"{}\".",
                    crate::log::clip(name)
                ),
            ));
        }
    }
    Ok(Permit { principal: Some(p) })
}

/// A required claim holds when the token's claim equals the value, or is an array containing it.
fn claim_satisfied(have: Option<&Value>, want: &Value) -> bool {
    match have {
        Some(Value::Array(items)) => items.contains(want),
        Some(v) => v == want,
        None => false,
    }
}

#[cfg(test)]
mod tests;
