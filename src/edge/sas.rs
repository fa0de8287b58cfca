//! Shared access signature (SAS) tokens, built byte for byte as the Azure IoT Node SDK
//! builds them (`azure-iot-common` `SharedAccessSignature`, `encodeUriComponentStrict`):
//!
//! ```text
//! SharedAccessSignature sr={enc(audience)}&sig={enc(base64(hmac_sha256(key, enc(audience) + "\n" + expiry)))}[&skn={enc(policy)}]&se={expiry}
//! ```
//!
//! signed with a local key ([`Token::with_key`]) or wrapping the workload API's digest
//! ([`Token::from_digest`]). Nothing here reads the clock: pass the expiry ([`expiry_after`]).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

/// Token lifetime the SDKs use (C, C#, Node, Python): one hour.
pub const DEFAULT_LIFETIME_SECS: u64 = 3600;

/// What `encodeURIComponent` percent-encodes, minus `!'()*`'s exemption: everything but
/// ASCII alphanumerics and `-_.~`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Errors building a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SasError {
    /// The shared access key is not base64 (the key itself is never shown).
    #[error("the shared access key is not valid base64")]
    KeyNotBase64,
    /// The shared access key decodes to nothing.
    #[error("the shared access key is empty")]
    EmptyKey,
    /// The audience is empty.
    #[error("the token audience is empty")]
    EmptyAudience,
    /// The digest returned by the signer is not base64 of a 32-byte HMAC-SHA256.
    #[error("the signature digest is not base64 of a 32-byte HMAC-SHA256")]
    BadDigest,
    /// `now + lifetime` does not fit in 64 bits.
    #[error("token expiry overflows: now {now} + lifetime {lifetime_secs} s")]
    ExpiryOverflow {
        /// Unix seconds given as now.
        now: u64,
        /// Lifetime asked for.
        lifetime_secs: u64,
    },
}

/// URL-encodes one component as the Node SDK's `encodeUriComponentStrict` does: JavaScript's
/// `encodeURIComponent` made strict, so only `A-Z a-z 0-9 - _ . ~` stay as they are, every
/// other UTF-8 byte becomes `%XX` with upper-case hex, except `!'()*`, which the SDK
/// re-encodes itself with lower-case hex (only `*` → `%2a` shows it).
pub fn encode_component(s: &str) -> String {
    // The set above encodes `*` with upper-case hex; the SDK writes `%2a`. No other `%2A`
    // can appear in the output, since a literal `%` is itself encoded as `%25`.
    utf8_percent_encode(s, COMPONENT)
        .to_string()
        .replace("%2A", "%2a")
}

/// The audience of a module's token: `{hub host}/devices/{device}/modules/{module}`
/// (not yet encoded; the ids are not encoded separately, as in the Node SDK).
pub fn module_audience(hub_host: &str, device_id: &str, module_id: &str) -> String {
    format!("{hub_host}/devices/{device_id}/modules/{module_id}")
}

/// The audience of a device's token: `{hub host}/devices/{device}`.
pub fn device_audience(hub_host: &str, device_id: &str) -> String {
    format!("{hub_host}/devices/{device_id}")
}

/// The string whose HMAC-SHA256 is the signature: `enc(audience) + "\n" + expiry`.
/// The expiry is in Unix seconds. This is what the workload API's `sign` gets (base64-encoded,
/// as its `data`): under IoT Edge the module has no key.
pub fn string_to_sign(audience: &str, expiry: u64) -> String {
    format!("{}\n{expiry}", encode_component(audience))
}

/// `now + lifetime_secs`, both in Unix seconds; fails instead of wrapping.
pub fn expiry_after(now: u64, lifetime_secs: u64) -> Result<u64, SasError> {
    now.checked_add(lifetime_secs)
        .ok_or(SasError::ExpiryOverflow { now, lifetime_secs })
}

/// A decoded shared access key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedAccessKey(Vec<u8>);

impl SharedAccessKey {
    /// Decodes the base64 `SharedAccessKey` of a connection string.
    pub fn from_base64(key: &str) -> Result<Self, SasError> {
        let bytes = BASE64
            .decode(key.trim())
            .map_err(|_| SasError::KeyNotBase64)?;
        if bytes.is_empty() {
            return Err(SasError::EmptyKey);
        }
        Ok(Self(bytes))
    }

    /// base64(HMAC-SHA256(key, data)): what the workload API's `sign` returns as `digest`.
    pub fn sign(&self, data: &str) -> Result<String, SasError> {
        // HMAC takes keys of any length, so this cannot fail for a decoded key.
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).map_err(|_| SasError::EmptyKey)?;
        mac.update(data.as_bytes());
        Ok(BASE64.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SharedAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedAccessKey(<redacted>)")
    }
}

/// A SAS token. `Debug` and `Display` redact the signature; [`Token::expose`] gives the
/// real string, for the wire only.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// `enc(audience)`, as sent in `sr` and signed.
    resource: String,
    /// `enc(base64 digest)`.
    signature: String,
    /// `enc(policy)`, when signed with a named policy's key.
    key_name: Option<String>,
    expiry: u64,
}

impl Token {
    /// Signs `audience` until `expiry` with a local key (connection-string identities).
    pub fn with_key(
        audience: &str,
        key: &SharedAccessKey,
        expiry: u64,
        policy: Option<&str>,
    ) -> Result<Self, SasError> {
        if audience.is_empty() {
            return Err(SasError::EmptyAudience);
        }
        let digest = key.sign(&string_to_sign(audience, expiry))?;
        Ok(Self::assemble(audience, &digest, expiry, policy))
    }

    /// Wraps the base64 `digest` of [`string_to_sign`]`(audience, expiry)` returned by the
    /// workload API's `sign` (IoT Edge identities). The digest is checked to be base64 of
    /// 32 bytes, so garbage from the API is caught here and not at edgeHub.
    pub fn from_digest(audience: &str, digest: &str, expiry: u64) -> Result<Self, SasError> {
        if audience.is_empty() {
            return Err(SasError::EmptyAudience);
        }
        match BASE64.decode(digest) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self::assemble(audience, digest, expiry, None)),
            _ => Err(SasError::BadDigest),
        }
    }

    fn assemble(audience: &str, digest: &str, expiry: u64, policy: Option<&str>) -> Self {
        Self {
            resource: encode_component(audience),
            signature: encode_component(digest),
            key_name: policy.filter(|p| !p.is_empty()).map(encode_component),
            expiry,
        }
    }

    /// Expiry, Unix seconds.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// The encoded audience, as in `sr`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The full token, signature included: a secret. Put it on the wire, never in a log.
    pub fn expose(&self) -> String {
        self.render(&self.signature)
    }

    /// Fields in the order `sr`, `sig`, `skn` (only with a policy name), `se`.
    fn render(&self, signature: &str) -> String {
        let mut s = format!("SharedAccessSignature sr={}&sig={signature}", self.resource);
        if let Some(skn) = &self.key_name {
            s.push_str("&skn=");
            s.push_str(skn);
        }
        s.push_str("&se=");
        s.push_str(&self.expiry.to_string());
        s
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("<redacted>"))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vectors below were computed independently with python3 (and the encoding was
    // checked against node's encodeURIComponent):
    //
    //   import hmac, hashlib, base64, urllib.parse
    //   key = base64.b64decode("YXp1cmVpb3RzZWN1cml0eS10ZXN0LWtleS0zMmJ5dGU=")
    //   enc = lambda s: urllib.parse.quote(s, safe="-_.~").replace("%2A", "%2a")
    //   sr = enc(aud); sts = sr + "\n" + str(exp)
    //   sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
    //   f"SharedAccessSignature sr={sr}&sig={enc(sig)}&se={exp}"
    const KEY: &str = "YXp1cmVpb3RzZWN1cml0eS10ZXN0LWtleS0zMmJ5dGU=";
    const AUDIENCE: &str = "myhub.azure-devices.net/devices/dev1/modules/azureiotsecurity";
    const DIGEST: &str = "gHUoN3kurqm4jDW/YdyM1rGQyh8wgvpzQmHVyJDH09U=";

    fn key() -> SharedAccessKey {
        SharedAccessKey::from_base64(KEY).unwrap()
    }

    #[test]
    fn encoding_matches_encode_uri_component_strict() {
        assert_eq!(
            encode_component("dev 1*(x)!'~/mod+é"),
            "dev%201%2a%28x%29%21%27~%2Fmod%2B%C3%A9"
        );
        assert_eq!(encode_component("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(encode_component("a=b&c;d%2A"), "a%3Db%26c%3Bd%252A");
    }

    #[test]
    fn audiences() {
        assert_eq!(
            module_audience("h.net", "d", "m"),
            "h.net/devices/d/modules/m"
        );
        assert_eq!(device_audience("h.net", "d"), "h.net/devices/d");
        assert_eq!(
            module_audience("myhub.azure-devices.net", "dev1", "azureiotsecurity"),
            AUDIENCE
        );
    }

    #[test]
    fn string_to_sign_is_encoded_audience_newline_expiry() {
        assert_eq!(
            string_to_sign(AUDIENCE, 1_700_000_000),
            "myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fazureiotsecurity\n1700000000"
        );
    }

    #[test]
    fn signature_matches_python_vector() {
        assert_eq!(
            key().sign(&string_to_sign(AUDIENCE, 1_700_000_000)),
            Ok(DIGEST.to_owned())
        );
    }

    #[test]
    fn token_with_key_matches_python_vector() {
        let token = Token::with_key(AUDIENCE, &key(), 1_700_000_000, None).unwrap();
        assert_eq!(
            token.expose(),
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fazureiotsecurity\
             &sig=gHUoN3kurqm4jDW%2FYdyM1rGQyh8wgvpzQmHVyJDH09U%3D&se=1700000000"
        );
        assert_eq!(token.expiry(), 1_700_000_000);
        assert_eq!(
            token.resource(),
            "myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fazureiotsecurity"
        );
    }

    #[test]
    fn token_with_unusual_ids_matches_python_vector() {
        let audience = "myhub.azure-devices.net/devices/dev 1*(x)!'~/modules/mod+é";
        let token = Token::with_key(audience, &key(), 1_700_003_600, None).unwrap();
        assert_eq!(
            token.expose(),
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%201%2a%28x%29%21%27~%2Fmodules%2Fmod%2B%C3%A9\
             &sig=46XwZj1BgSIYc9gdbYHfJhp4qjSMRE%2Bxtk3njh1FtTU%3D&se=1700003600"
        );
    }

    #[test]
    fn policy_name_goes_between_sig_and_se() {
        let token = Token::with_key(AUDIENCE, &key(), 1_700_000_000, Some("iot hub*")).unwrap();
        assert_eq!(
            token.expose(),
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fazureiotsecurity\
             &sig=gHUoN3kurqm4jDW%2FYdyM1rGQyh8wgvpzQmHVyJDH09U%3D&skn=iot%20hub%2a&se=1700000000"
        );
        let no_policy = Token::with_key(AUDIENCE, &key(), 1_700_000_000, Some("")).unwrap();
        assert!(!no_policy.expose().contains("skn="));
    }

    #[test]
    fn token_from_workload_digest_equals_token_with_key() {
        let from_digest = Token::from_digest(AUDIENCE, DIGEST, 1_700_000_000).unwrap();
        let with_key = Token::with_key(AUDIENCE, &key(), 1_700_000_000, None).unwrap();
        assert_eq!(from_digest, with_key);
    }

    #[test]
    fn bad_digests_and_audiences_are_rejected() {
        assert_eq!(
            Token::from_digest(AUDIENCE, "not base64!", 1),
            Err(SasError::BadDigest)
        );
        assert_eq!(
            Token::from_digest(AUDIENCE, "AAAA", 1),
            Err(SasError::BadDigest)
        );
        assert_eq!(
            Token::from_digest("", DIGEST, 1),
            Err(SasError::EmptyAudience)
        );
        assert_eq!(
            Token::with_key("", &key(), 1, None),
            Err(SasError::EmptyAudience)
        );
    }

    #[test]
    fn bad_keys_are_rejected_without_echoing_them() {
        let err = SharedAccessKey::from_base64("s3cr3t!!").unwrap_err();
        assert_eq!(err, SasError::KeyNotBase64);
        assert_eq!(err.to_string(), "the shared access key is not valid base64");
        assert_eq!(SharedAccessKey::from_base64(""), Err(SasError::EmptyKey));
    }

    #[test]
    fn debug_and_display_redact_secrets() {
        let token = Token::with_key(AUDIENCE, &key(), 1_700_000_000, None).unwrap();
        let shown = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fazureiotsecurity\
                     &sig=<redacted>&se=1700000000";
        assert_eq!(token.to_string(), shown);
        assert_eq!(format!("{token:?}"), format!("Token({shown})"));
        assert_eq!(format!("{:?}", key()), "SharedAccessKey(<redacted>)");
    }

    #[test]
    fn expiry_is_now_plus_lifetime() {
        assert_eq!(
            expiry_after(1_700_000_000, DEFAULT_LIFETIME_SECS),
            Ok(1_700_003_600)
        );
        assert_eq!(
            expiry_after(u64::MAX, 1),
            Err(SasError::ExpiryOverflow {
                now: u64::MAX,
                lifetime_secs: 1
            })
        );
    }
}
