//! Bounded label values. What a client controls (role names, model names) never becomes an
//! unbounded set of Prometheus series, `/stats` keys or per-role entries in an event: only the
//! roles `[compression.roles]` configures are kept apart, every other name counts as `other`.
//! Model names are never a label or a `/stats` key at all (the `route` label is the configured
//! route, `default` or a `model_prefix`).

use std::collections::BTreeMap;

use super::event::RoleTokens;

/// The roles with a `[compression.roles.<role>]` table.
pub const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];
/// The label of every other role.
pub const OTHER: &str = "other";

/// The label for a role name: the role when configured, else [`OTHER`].
pub fn role_label(role: &str) -> &'static str {
    ROLES.iter().find(|r| **r == role).copied().unwrap_or(OTHER)
}

/// Merges the entries of roles that are not configured into one `other` entry.
pub fn fold_roles(roles: &mut BTreeMap<String, RoleTokens>) {
    if roles.keys().all(|r| role_label(r) != OTHER || r == OTHER) {
        return;
    }
    let mut other = RoleTokens::default();
    roles.retain(|role, t| {
        let keep = role_label(role) != OTHER;
        if !keep {
            other.before += t.before;
            other.after += t.after;
        }
        keep
    });
    roles.insert(OTHER.to_owned(), other);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::config::RolesConfig;

    #[test]
    fn labels_are_the_configured_roles() {
        let configured = RolesConfig::default();
        for r in ROLES {
            assert!(
                configured.get(r).is_some(),
                "{r} has no [compression.roles] table"
            );
            assert_eq!(role_label(r), r);
        }
        for r in ["", "System", "other", "robot", "user "] {
            assert!(configured.get(r).is_none());
            assert_eq!(role_label(r), OTHER);
        }
    }

    #[test]
    fn unknown_roles_fold_into_other() {
        let t = |before, after| RoleTokens { before, after };
        let mut roles: BTreeMap<String, RoleTokens> = (0..1000)
            .map(|i| (format!("invented-{i}"), t(2, 1)))
            .collect();
        roles.insert("user".into(), t(10, 7));
        roles.insert("other".into(), t(5, 5));
        fold_roles(&mut roles);
        let keys: Vec<&str> = roles.keys().map(String::as_str).collect();
        assert_eq!(keys, ["other", "user"]);
        assert_eq!(roles["other"], t(2005, 1005));
        assert_eq!(roles["user"], t(10, 7));
    }
}
