//! API users: named access keys with a [`Role`].
//!
//! # Design
//!
//! A user is a document of kind `user` keyed by its name. SigV4 is a
//! symmetric scheme: checking a signature needs the secret itself (the
//! signing key is derived from it per day, region and service, so no
//! one-way form of it can check tomorrow's requests). berth therefore keeps
//! each user's secret in its store, as AWS keeps its own, and protects it the
//! way it protects the root key's credentials file: the store file is
//! readable by the server's user only (mode 0600, set at every start). The
//! secret is shown once, by `CreateUser`, and never listed.
//!
//! Every key the API accepts (the root key and each user's) is held in memory
//! by [`Keys`], loaded from the store at start and changed only after the
//! store committed a change, so a removed key stops working as soon as
//! `DeleteUser` answers. One server owns a data dir, so no other process
//! changes users behind its back.

use crate::access::{Caller, Role};
use crate::credentials::{random_string, RootKey};
use crate::ops::Ctx;
use berth_model::{EcsError, ErrorKind};
use berth_store::{docs, Expect, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The documents' kind.
pub const KIND: &str = "user";

/// The name the root key goes by; no user may take it.
pub const ROOT_USER: &str = "root";

/// A user as stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub created_at: f64,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// A user as the API shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    pub role: Role,
    pub access_key_id: String,
    pub created_at: f64,
}

impl From<&UserRecord> for User {
    fn from(r: &UserRecord) -> Self {
        Self {
            name: r.name.clone(),
            role: r.role,
            access_key_id: r.access_key_id.clone(),
            created_at: r.created_at,
        }
    }
}

/// An accepted key: its secret and whose it is.
pub struct Key {
    pub secret: String,
    pub caller: Caller,
}

fn key_of(u: &UserRecord) -> Arc<Key> {
    Arc::new(Key {
        secret: u.secret_access_key.clone(),
        caller: Caller {
            access_key_id: u.access_key_id.clone(),
            user: u.name.clone(),
            role: u.role,
        },
    })
}

/// Every key the API accepts, by access key id.
pub struct Keys {
    map: RwLock<HashMap<String, Arc<Key>>>,
}

impl Keys {
    /// The root key and every stored user's.
    pub fn load(root: &RootKey, store: &Store) -> Result<Self, EcsError> {
        let mut map = HashMap::new();
        for (_, u) in store.read(|tx| docs::all::<UserRecord>(tx, KIND, None))? {
            map.insert(u.value.access_key_id.clone(), key_of(&u.value));
        }
        // The root key wins over a user that somehow holds the same id.
        map.insert(
            root.access_key_id.clone(),
            Arc::new(Key {
                secret: root.secret_access_key.clone(),
                caller: Caller {
                    access_key_id: root.access_key_id.clone(),
                    user: ROOT_USER.into(),
                    role: Role::Admin,
                },
            }),
        );
        Ok(Self {
            map: RwLock::new(map),
        })
    }

    // A writer that panicked left the map whole (each change is one
    // insert or remove), so a poisoned lock is still used.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<Key>>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Arc<Key>>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, access_key_id: &str) -> Option<Arc<Key>> {
        self.read().get(access_key_id).cloned()
    }

    fn contains(&self, access_key_id: &str) -> bool {
        self.read().contains_key(access_key_id)
    }

    fn insert(&self, u: &UserRecord) {
        self.write().insert(u.access_key_id.clone(), key_of(u));
    }

    fn remove(&self, access_key_id: &str) {
        self.write().remove(access_key_id);
    }
}

/// Checks a user name: 1 to 64 of letters, digits and `+=,.@_-` (IAM's rule).
pub fn check_name(name: &str) -> Result<(), EcsError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if !ok {
        return Err(EcsError::invalid(format!(
            "Invalid user name '{}': use 1 to 64 letters, digits and +=,.@_-.",
            name.chars().take(80).collect::<String>()
        )));
    }
    if name == ROOT_USER {
        return Err(EcsError::invalid(
            "The name 'root' belongs to the root key; choose another.",
        ));
    }
    Ok(())
}

/// Reads a role name.
pub fn parse_role(role: &str) -> Result<Role, EcsError> {
    Role::parse(role).ok_or_else(|| {
        EcsError::invalid(format!(
            "Invalid role '{}': use admin, operator or viewer.",
            role.chars().take(80).collect::<String>()
        ))
    })
}

fn new_access_key_id() -> String {
    format!(
        "AKIA{}",
        random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    )
}

fn new_secret() -> String {
    random_string(
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    )
}

/// Creates a user with a new key; answers the stored record (with its secret).
pub fn create(ctx: &Ctx, keys: &Keys, name: &str, role: Role) -> Result<UserRecord, EcsError> {
    check_name(name)?;
    let mut access_key_id = new_access_key_id();
    while keys.contains(&access_key_id) {
        access_key_id = new_access_key_id();
    }
    let record = UserRecord {
        name: name.to_string(),
        role,
        access_key_id,
        secret_access_key: new_secret(),
        created_at: ctx.now(),
    };
    ctx.store.write(|tx| {
        if docs::get::<UserRecord>(tx, KIND, name)?.is_some() {
            return Err(EcsError::new(
                ErrorKind::Conflict,
                format!("A user named {name} already exists."),
            ));
        }
        docs::put(tx, KIND, name, KIND, &record, Expect::Absent)?;
        Ok(())
    })?;
    keys.insert(&record);
    Ok(record)
}

/// Every user, by name.
pub fn list(ctx: &Ctx) -> Result<Vec<User>, EcsError> {
    let all = ctx
        .store
        .read(|tx| docs::all::<UserRecord>(tx, KIND, None))?;
    Ok(all.iter().map(|(_, u)| User::from(&u.value)).collect())
}

/// Removes a user; its key is refused from the moment this returns.
pub fn delete(ctx: &Ctx, keys: &Keys, name: &str) -> Result<User, EcsError> {
    if name == ROOT_USER {
        return Err(EcsError::invalid(
            "The root key is not a user: change it in the server's credentials file or environment.",
        ));
    }
    let removed = ctx.store.write(|tx| {
        let Some(u) = docs::get::<UserRecord>(tx, KIND, name)? else {
            return Err(EcsError::new(
                ErrorKind::ResourceNotFound,
                format!(
                    "No user named {}.",
                    name.chars().take(80).collect::<String>()
                ),
            ));
        };
        tx.delete_document(KIND, name, u.version)?;
        Ok(u.value)
    })?;
    keys.remove(&removed.access_key_id);
    Ok(User::from(&removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("ci.bot+deploy@example.com").is_ok());
        for bad in ["", "root", "a b", "x/y", "é", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(parse_role("operator").is_ok());
        assert!(parse_role("Admin").is_err());
    }

    #[test]
    fn secrets_are_not_in_debug() {
        let r = UserRecord {
            name: "a".into(),
            role: Role::Viewer,
            access_key_id: "AKIA".into(),
            secret_access_key: "s3cr3t-s3cr3t".into(),
            created_at: 0.0,
        };
        assert!(!format!("{r:?}").contains("s3cr3t"));
    }
}
