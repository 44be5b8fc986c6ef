//! Roles: what part a task plays, chosen by its kind. The project manager's role decides which
//! branch a task works on, how its results count against an epic, and which prompt its agent
//! gets. Pure.

/// The trailer the worker puts on a project manager's commits (`Swarm-Role: manager`): a plan
/// edit that carries it is the manager's own, not a person steering.
pub const MANAGER_TRAILER: &str = "Swarm-Role: manager";

/// A role, chosen by the task's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Manager,
    Implement,
    Review,
    Test,
    Merge,
}

impl Role {
    /// `epic`, `plan` and `manager` tasks are the project manager's; `review`, `test` and
    /// `merge` have their own roles; everything else implements.
    pub fn of_kind(kind: Option<&str>) -> Self {
        match kind.unwrap_or("implement") {
            "epic" | "plan" | "manager" => Self::Manager,
            "review" => Self::Review,
            "test" => Self::Test,
            "merge" => Self::Merge,
            _ => Self::Implement,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Manager => "manager",
            Self::Implement => "implement",
            Self::Review => "review",
            Self::Test => "test",
            Self::Merge => "merge",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn kinds_map_to_roles() {
        for (kind, role) in [
            (None, Role::Implement),
            (Some("epic"), Role::Manager),
            (Some("plan"), Role::Manager),
            (Some("manager"), Role::Manager),
            (Some("review"), Role::Review),
            (Some("test"), Role::Test),
            (Some("merge"), Role::Merge),
            (Some("docs"), Role::Implement),
        ] {
            assert_eq!(Role::of_kind(kind), role, "{kind:?}");
        }
        assert_eq!(
            super::MANAGER_TRAILER,
            format!("Swarm-Role: {}", Role::Manager.name())
        );
    }
}
