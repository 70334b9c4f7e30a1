//! The root access key.
//!
//! From `BERTH_ACCESS_KEY_ID` / `BERTH_SECRET_ACCESS_KEY` when both are set;
//! otherwise read from `DATA_DIR/credentials`, generated there on first start
//! in the AWS shared-credentials format (mode 0600) so the aws CLI and boto3 can
//! use it with `AWS_SHARED_CREDENTIALS_FILE`.

use anyhow::Context as _;
use rand::Rng as _;
use std::fmt;
use std::path::{Path, PathBuf};

/// The root key and where it came from.
#[derive(Clone)]
pub struct RootKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The credentials file, when the key lives in one.
    pub file: Option<PathBuf>,
    /// Whether this start generated the key.
    pub generated: bool,
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("file", &self.file)
            .finish()
    }
}

pub(crate) fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Reads `aws_access_key_id` / `aws_secret_access_key` of `[default]` from a shared-credentials file.
pub fn parse_credentials_file(text: &str, profile: &str) -> Option<(String, String)> {
    let mut in_profile = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_profile = line.trim_matches(|c| c == '[' || c == ']').trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((id?, secret?))
}

impl RootKey {
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        if let (Ok(id), Ok(secret)) = (
            std::env::var("BERTH_ACCESS_KEY_ID"),
            std::env::var("BERTH_SECRET_ACCESS_KEY"),
        ) {
            if !id.is_empty() && !secret.is_empty() {
                return Ok(Self {
                    access_key_id: id,
                    secret_access_key: secret,
                    file: None,
                    generated: false,
                });
            }
        }
        let file = data_dir.join("credentials");
        if file.exists() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (id, secret) = parse_credentials_file(&text, "default").with_context(|| {
                format!("{} has no [default] aws_access_key_id and aws_secret_access_key; fix or remove it", file.display())
            })?;
            return Ok(Self {
                access_key_id: id,
                secret_access_key: secret,
                file: Some(file),
                generated: false,
            });
        }
        let id = format!(
            "AKIA{}",
            random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        );
        let secret = random_string(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        );
        let text =
            format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n");
        write_private(&file, &text)?;
        Ok(Self {
            access_key_id: id,
            secret_access_key: secret,
            file: Some(file),
            generated: true,
        })
    }
}

/// Writes a file only its owner can read, atomically (temp file, fsync, rename).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles() {
        let text = "[other]\naws_access_key_id = X\naws_secret_access_key = Y\n[default]\naws_access_key_id=A\n aws_secret_access_key = B \n";
        assert_eq!(
            parse_credentials_file(text, "default"),
            Some(("A".into(), "B".into()))
        );
        assert_eq!(
            parse_credentials_file(text, "other"),
            Some(("X".into(), "Y".into()))
        );
        assert_eq!(parse_credentials_file(text, "none"), None);
    }

    #[test]
    fn generates_once_with_private_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = RootKey::load_or_create(dir.path()).expect("create");
        if a.file.is_none() {
            return; // BERTH_ACCESS_KEY_ID set in this environment
        }
        assert!(a.generated);
        let mode = std::fs::metadata(dir.path().join("credentials"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = RootKey::load_or_create(dir.path()).expect("load");
        assert!(!b.generated);
        assert_eq!(a.access_key_id, b.access_key_id);
        assert_eq!(a.secret_access_key, b.secret_access_key);
        assert!(!format!("{a:?}").contains(&a.secret_access_key));
    }
}
