//! The verified caller of a request, as an axum extractor: a handler that takes a [`Caller`]
//! runs only for a valid token, and (extractors of the request's parts running before the
//! body's) before the body is read, so an anonymous request learns nothing from a 400.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use flotilla_api::Problem;

use super::{Identity, Verifier};

/// Who is asking, verified. Take it in a handler whose state gives a [`Verifier`]
/// (`impl FromRef<State> for Verifier`); a missing or bad token is answered 401 before the
/// handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Identity);

impl<S> FromRequestParts<S> for Caller
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Verifier::from_ref(state)
            .caller(&parts.headers)
            .await
            .map(Caller)
            .map_err(|e| e.to_problem())
    }
}

impl Caller {
    /// The token's subject: an account id for a customer, a client id for a service.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The verified token's claims.
    pub fn identity(&self) -> &Identity {
        &self.0
    }

    /// Whether the caller is an administrator.
    pub fn is_admin(&self) -> bool {
        self.0.has_role("admin")
    }

    /// Passes an admin, or a holder of `scope` when one is given; else 403.
    pub fn require(&self, scope: Option<&str>) -> Result<(), Problem> {
        self.0.admin_or(scope).map_err(|e| e.to_problem())
    }

    /// Whether the caller may see or change an object owned by `owner`: its owner, an admin,
    /// or a service holding `scope` (orders reading payments holds `payments.read`). An object
    /// with no recorded owner is for the privileged only.
    pub fn may_access(&self, owner: Option<&str>, scope: &str) -> bool {
        self.is_admin() || self.0.has_scope(scope) || owner.is_some_and(|o| o == self.0.subject)
    }

    /// Of `items`, those the caller may see (each owned by `owner(item)`); when that leaves
    /// none for a caller who is not privileged, 404 naming `what` — the answer a list of
    /// someone else's objects gets, and a list of none, so neither is told from the other.
    pub fn own_only<T>(
        &self,
        mut items: Vec<T>,
        owner: impl Fn(&T) -> Option<&str>,
        scope: &str,
        what: impl std::fmt::Display,
    ) -> Result<Vec<T>, Problem> {
        items.retain(|item| self.may_access(owner(item), scope));
        if items.is_empty() && !self.may_access(None, scope) {
            return Err(Problem::not_found(format!("no {what}")));
        }
        Ok(items)
    }

    /// `Ok` when [`Caller::may_access`] passes; else 404 naming `what`, the answer a missing
    /// object gets, so a stranger cannot tell someone else's object from none at all.
    pub fn owns(&self, owner: Option<&str>, scope: &str, what: impl std::fmt::Display) -> Result<(), Problem> {
        if self.may_access(owner, scope) {
            Ok(())
        } else {
            Err(Problem::not_found(format!("no {what}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(subject: &str, scopes: &[&str], roles: &[&str]) -> Caller {
        Caller(Identity {
            subject: subject.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        })
    }

    #[test]
    fn the_owner_an_admin_and_a_scoped_service_pass_a_stranger_gets_404() {
        let owner = caller("u1", &["shop"], &[]);
        assert!(owner.owns(Some("u1"), "payments.read", "payment `p1`").is_ok());
        assert!(caller("admin", &[], &["admin"])
            .owns(Some("u1"), "payments.read", "x")
            .is_ok());
        assert!(caller("orders", &["payments.read"], &[])
            .owns(Some("u1"), "payments.read", "x")
            .is_ok());
        let refused = caller("u2", &["shop"], &[])
            .owns(Some("u1"), "payments.read", "payment `p1`")
            .unwrap_err();
        assert_eq!(refused.status, 404);
        assert_eq!(refused.detail.as_deref(), Some("no payment `p1`"));
        // No recorded owner: the privileged only.
        assert!(!owner.may_access(None, "payments.read"));
        // A scope that is not the one named does not pass.
        assert!(!caller("orders", &["payments.charge"], &[]).may_access(Some("u1"), "payments.read"));
        // Lists: the caller's own, or 404 when none is; a scoped service sees all, even none.
        let items = vec![("p1", Some("u1")), ("p2", Some("u2")), ("p3", None)];
        fn owner_of<'a>(item: &'a (&'static str, Option<&'static str>)) -> Option<&'a str> {
            item.1
        }
        let mine = owner
            .own_only(items.clone(), owner_of, "payments.read", "payments")
            .unwrap();
        assert_eq!(mine, [("p1", Some("u1"))]);
        let refused = caller("u3", &[], &[])
            .own_only(items, owner_of, "payments.read", "payments")
            .unwrap_err();
        assert_eq!((refused.status, refused.detail.as_deref()), (404, Some("no payments")));
        let reader = caller("orders", &["payments.read"], &[]);
        assert!(reader
            .own_only(
                Vec::<(&'static str, Option<&'static str>)>::new(),
                owner_of,
                "payments.read",
                "x"
            )
            .unwrap()
            .is_empty());
    }
}
