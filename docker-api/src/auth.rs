//! Registry credentials as the Engine takes them: `X-Registry-Auth` (one registry)
//! and `X-Registry-Config` (a map of registries, for builds).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use http::HeaderValue;
use serde::Serialize;

/// Credentials for one registry.
///
/// ```
/// use docker_api::RegistryAuth;
/// let auth = RegistryAuth::password("ci", "s3cret").server("registry.example.com");
/// assert!(!auth.header_value().is_empty());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistryAuth {
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serveraddress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identitytoken: Option<String>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("serveraddress", &self.serveraddress)
            .field(
                "identitytoken",
                &self.identitytoken.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl RegistryAuth {
    /// No credentials: anonymous access (the Engine still wants the header).
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A user name and password (or access token used as a password).
    pub fn password(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: Some(username.into()),
            password: Some(password.into()),
            ..Self::default()
        }
    }

    /// An identity token (OAuth refresh token) as `docker login` stores it.
    pub fn identity_token(token: impl Into<String>) -> Self {
        Self {
            identitytoken: Some(token.into()),
            ..Self::default()
        }
    }

    /// The registry these credentials are for (`registry.example.com:5000`).
    pub fn server(mut self, address: impl Into<String>) -> Self {
        self.serveraddress = Some(address.into());
        self
    }

    /// The registry address, if set.
    pub fn server_address(&self) -> Option<&str> {
        self.serveraddress.as_deref()
    }

    /// The value of `X-Registry-Auth`: base64url of the JSON credentials.
    pub fn header_value(&self) -> HeaderValue {
        encode(self)
    }
}

/// The value of `X-Registry-Config`: base64url of `{registry: credentials}`.
pub(crate) fn registry_config(map: &BTreeMap<String, RegistryAuth>) -> HeaderValue {
    encode(map)
}

fn encode<T: Serialize>(value: &T) -> HeaderValue {
    let json = serde_json::to_vec(value).expect("credentials serialise");
    HeaderValue::from_str(&URL_SAFE.encode(json)).expect("base64 is a valid header value")
}

/// The `X-Registry-Auth` header name.
pub(crate) const X_REGISTRY_AUTH: http::HeaderName =
    http::HeaderName::from_static("x-registry-auth");

/// The `X-Registry-Config` header name.
pub(crate) const X_REGISTRY_CONFIG: http::HeaderName =
    http::HeaderName::from_static("x-registry-config");

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(v: &HeaderValue) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE.decode(v.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn encodes_the_json_the_engine_expects() {
        let v = decode(
            &RegistryAuth::password("u", "p?>")
                .server("r:5000")
                .header_value(),
        );
        assert_eq!(
            v,
            serde_json::json!({"username":"u","password":"p?>","serveraddress":"r:5000"})
        );
        let v = decode(&RegistryAuth::identity_token("tok").header_value());
        assert_eq!(v, serde_json::json!({"identitytoken":"tok"}));
        assert_eq!(
            decode(&RegistryAuth::anonymous().header_value()),
            serde_json::json!({})
        );
        let mut map = BTreeMap::new();
        map.insert("r:5000".to_string(), RegistryAuth::password("u", "p"));
        assert_eq!(
            decode(&registry_config(&map)),
            serde_json::json!({"r:5000":{"username":"u","password":"p"}})
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let s = format!("{:?}", RegistryAuth::password("u", "hunter2"));
        assert!(!s.contains("hunter2"), "{s}");
    }
}
