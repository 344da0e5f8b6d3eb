//! Who may see the pages: nobody is asked (behind a proxy that authenticates), a bearer token,
//! or HTTP basic auth. Secrets are compared in constant time and never rendered or logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

/// How requests authenticate.
#[derive(Clone, Default)]
pub enum Auth {
    /// Every request is let in (for a UI bound to localhost, or behind a proxy that
    /// authenticates).
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP basic auth (browsers ask for it).
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    // Never the secret, in any output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Bearer(_) => f.write_str("Auth::Bearer(****)"),
            Auth::Basic { user, .. } => {
                write!(f, "Auth::Basic {{ user: {user:?}, password: **** }}")
            }
        }
    }
}

/// An authentication setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

impl Auth {
    /// From the environment: `REDIQ_WEB_TOKEN` (bearer), or `REDIQ_WEB_USER` with
    /// `REDIQ_WEB_PASSWORD` (basic); neither set is [`Auth::None`]. Both, or a user without a
    /// password, or an empty secret, is an error naming the variables (never their values).
    ///
    /// ```
    /// // With none of the variables set, every request is let in.
    /// # std::env::remove_var("REDIQ_WEB_TOKEN"); std::env::remove_var("REDIQ_WEB_USER");
    /// # std::env::remove_var("REDIQ_WEB_PASSWORD");
    /// assert!(matches!(rediq::web::Auth::from_env(), Ok(rediq::web::Auth::None)));
    /// ```
    pub fn from_env() -> Result<Auth, AuthError> {
        let var = |k: &str| std::env::var(k).ok();
        Auth::from_vars(
            var("REDIQ_WEB_TOKEN"),
            var("REDIQ_WEB_USER"),
            var("REDIQ_WEB_PASSWORD"),
        )
    }

    fn from_vars(
        token: Option<String>,
        user: Option<String>,
        password: Option<String>,
    ) -> Result<Auth, AuthError> {
        match (token, user, password) {
            (None, None, None) => Ok(Auth::None),
            (Some(t), None, None) if !t.is_empty() => Ok(Auth::Bearer(t)),
            (Some(_), None, None) => Err(AuthError("REDIQ_WEB_TOKEN is set but empty".into())),
            (None, Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Ok(Auth::Basic {
                user: u,
                password: p,
            }),
            (None, Some(_), Some(_)) => Err(AuthError(
                "REDIQ_WEB_USER and REDIQ_WEB_PASSWORD must both be non-empty".into(),
            )),
            (None, Some(_), None) | (None, None, Some(_)) => Err(AuthError(
                "set both REDIQ_WEB_USER and REDIQ_WEB_PASSWORD for basic auth".into(),
            )),
            (Some(_), _, _) => Err(AuthError(
                "set REDIQ_WEB_TOKEN or REDIQ_WEB_USER/REDIQ_WEB_PASSWORD, not both".into(),
            )),
        }
    }

    /// Whether the request's `Authorization` header lets it in.
    fn admits(&self, header: Option<&HeaderValue>) -> bool {
        let given = header.and_then(|h| h.to_str().ok()).unwrap_or("");
        let same = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
        match self {
            Auth::None => true,
            Auth::Bearer(token) => given
                .strip_prefix("Bearer ")
                .is_some_and(|t| same(t.as_bytes(), token.as_bytes())),
            Auth::Basic { user, password } => given
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .is_some_and(|pair| {
                    let want = format!("{user}:{password}");
                    same(&pair, want.as_bytes())
                }),
        }
    }
}

/// The middleware: 401 (with a basic-auth challenge where it applies) unless admitted.
pub(crate) async fn check(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if auth.admits(req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    let mut res = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    let challenge = match *auth {
        Auth::Basic { .. } => "Basic realm=\"rediq\", charset=\"UTF-8\"",
        _ => "Bearer realm=\"rediq\"",
    };
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn settings_come_from_the_variables_and_bad_ones_name_them_not_their_values() {
        assert!(matches!(Auth::from_vars(None, None, None), Ok(Auth::None)));
        assert!(matches!(
            Auth::from_vars(s("t0k"), None, None),
            Ok(Auth::Bearer(t)) if t == "t0k"
        ));
        assert!(matches!(
            Auth::from_vars(None, s("ops"), s("hunter2")),
            Ok(Auth::Basic { .. })
        ));
        for (t, u, p) in [
            (s("x"), s("u"), s("p")),
            (None, s("u"), None),
            (None, None, s("hunter2")),
            (s(""), None, None),
            (None, s("u"), s("")),
        ] {
            let e = Auth::from_vars(t, u, p).unwrap_err().to_string();
            assert!(e.contains("REDIQ_WEB_"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let shown = format!(
            "{:?}",
            Auth::Basic {
                user: "ops".into(),
                password: "hunter2".into()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn only_the_right_secret_is_admitted() {
        let bearer = Auth::Bearer("t0k".into());
        let h = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(bearer.admits(Some(&h("Bearer t0k"))));
        assert!(!bearer.admits(Some(&h("Bearer t0"))));
        assert!(!bearer.admits(None));
        let basic = Auth::Basic {
            user: "ops".into(),
            password: "pw".into(),
        };
        let enc = base64::engine::general_purpose::STANDARD.encode("ops:pw");
        assert!(basic.admits(Some(&h(&format!("Basic {enc}")))));
        let wrong = base64::engine::general_purpose::STANDARD.encode("ops:px");
        assert!(!basic.admits(Some(&h(&format!("Basic {wrong}")))));
        assert!(Auth::None.admits(None));
    }
}
