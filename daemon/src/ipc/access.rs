//! Who may do what on the socket, decided from the connecting process's
//! credentials (as tailscaled does).
//!
//! Root, the daemon's own user and members of the operator group may issue
//! every command; everyone else is read-only.

use lanspread_proto::ipc::Access;

/// The access decision's inputs, fixed at start.
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    /// The daemon's effective uid.
    daemon_uid: u32,
    /// The operator group's name, if set.
    operator_group: Option<String>,
}

impl AccessPolicy {
    /// A policy granting full access to `operator_group` members (besides
    /// root and the daemon's own user).
    pub fn new(operator_group: Option<String>) -> Self {
        Self {
            daemon_uid: current_uid(),
            operator_group,
        }
    }

    /// The access of a client with effective `uid` and `gid` (`None` when
    /// the platform cannot tell: read-only).
    ///
    /// Group membership is looked up on every connection, so adding a user
    /// to the operator group takes effect without a restart.
    pub fn decide(&self, uid: Option<u32>, gid: Option<u32>) -> Access {
        let Some(uid) = uid else {
            return Access::ReadOnly;
        };
        if uid == 0 || uid == self.daemon_uid || self.in_operator_group(uid, gid) {
            Access::Operator
        } else {
            Access::ReadOnly
        }
    }

    #[cfg(unix)]
    fn in_operator_group(&self, uid: u32, gid: Option<u32>) -> bool {
        use nix::unistd::{Gid, Group, Uid, User};
        let Some(group_name) = &self.operator_group else {
            return false;
        };
        let group = match Group::from_name(group_name) {
            Ok(Some(group)) => group,
            Ok(None) => return false,
            Err(err) => {
                tracing::warn!(group = %group_name, cause = %err, "cannot look up operator group");
                return false;
            }
        };
        if gid.map(Gid::from_raw) == Some(group.gid) {
            return true;
        }
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(user)) => user.gid == group.gid || group.mem.contains(&user.name),
            _ => false,
        }
    }

    #[cfg(not(unix))]
    fn in_operator_group(&self, _uid: u32, _gid: Option<u32>) -> bool {
        false
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemon_user_are_operators_others_read_only() {
        let policy = AccessPolicy {
            daemon_uid: 4242,
            operator_group: Some("no-such-group-lanspread-test".into()),
        };
        assert_eq!(policy.decide(Some(0), Some(0)), Access::Operator);
        assert_eq!(policy.decide(Some(4242), Some(100)), Access::Operator);
        assert_eq!(policy.decide(Some(65534), Some(65534)), Access::ReadOnly);
        assert_eq!(policy.decide(None, None), Access::ReadOnly);
    }

    #[test]
    fn members_of_the_operator_group_are_operators() {
        // The root group exists everywhere with gid 0; "root" is its
        // primary member. A uid whose primary gid is 0 is an operator.
        let policy = AccessPolicy {
            daemon_uid: 4242,
            operator_group: Some("root".into()),
        };
        assert_eq!(policy.decide(Some(65534), Some(0)), Access::Operator);
        assert_eq!(policy.decide(Some(65534), Some(65534)), Access::ReadOnly);
    }
}
