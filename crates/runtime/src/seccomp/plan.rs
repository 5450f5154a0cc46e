//! A profile checked and turned into the list of libseccomp rules to add, before any filter exists:
//! actions with their errno, conditions, syscall names resolved once (for the native architecture).

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpSyscall};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall,
};

use super::{SeccompError, NOTIFY_REFUSED_SYSCALLS};

/// Linux syscalls take at most six arguments.
const MAX_ARGS: usize = 6;

/// One libseccomp rule: `action` for `syscall` when every condition holds.
#[derive(Debug)]
pub(super) struct Rule<'a> {
    pub name: &'a str,
    /// The native syscall number (libseccomp translates it for other architectures).
    pub syscall: ScmpSyscall,
    pub action: ScmpAction,
    pub conditions: Vec<ScmpArgCompare>,
}

/// Every rule of a profile, in profile order, and what was left out.
#[derive(Debug, Default)]
pub(super) struct Plan<'a> {
    pub rules: Vec<Rule<'a>>,
    /// Names libseccomp does not know, each once.
    pub skipped: Vec<String>,
    pub uses_notify: bool,
}

/// Check the profile's entries against `default` (the default action) and list their rules.
pub(super) fn plan(
    config: &LinuxSeccomp,
    default: ScmpAction,
    has_listener: bool,
) -> Result<Plan<'_>, SeccompError> {
    let mut plan = Plan::default();
    for (index, entry) in config.syscalls().iter().flatten().enumerate() {
        plan_entry(&mut plan, index, entry, default, has_listener)?;
    }
    Ok(plan)
}

fn plan_entry<'a>(
    plan: &mut Plan<'a>,
    index: usize,
    entry: &'a LinuxSyscall,
    default: ScmpAction,
    has_listener: bool,
) -> Result<(), SeccompError> {
    let names = entry.names();
    if names.is_empty() {
        return Err(SeccompError::NoNames { index });
    }
    if names.iter().any(|n| n.is_empty()) {
        return Err(SeccompError::EmptyName { index });
    }
    let what = || entry_label(index, names);
    let action = scmp_action(entry.action(), entry.errno_ret(), what)?;
    if action == ScmpAction::Notify {
        if !has_listener {
            return Err(SeccompError::NotifyWithoutListener { what: what() });
        }
        if let Some(name) = names
            .iter()
            .find(|n| NOTIFY_REFUSED_SYSCALLS.contains(&n.as_str()))
        {
            return Err(SeccompError::NotifyRefused {
                syscall: name.clone(),
            });
        }
    }
    let args: &[LinuxSeccompArg] = entry.args().as_deref().unwrap_or_default();
    let conditions = args
        .iter()
        .map(|arg| condition(arg, &what))
        .collect::<Result<Vec<_>, _>>()?;
    if action == default {
        // Redundant with the default action, and libseccomp refuses it: nothing to add.
        return Ok(());
    }
    // One rule with every condition AND-ed; if an argument is tested twice, one rule per condition (runc).
    let mut seen = [false; MAX_ARGS];
    let repeated = args.iter().any(|a| std::mem::replace(&mut seen[a.index()], true));
    let groups: Vec<Vec<ScmpArgCompare>> = if repeated {
        conditions.iter().map(|c| vec![*c]).collect()
    } else {
        vec![conditions]
    };

    for name in names {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            if !plan.skipped.contains(name) {
                plan.skipped.push(name.clone());
            }
            continue;
        };
        for group in &groups {
            plan.rules.push(Rule {
                name,
                syscall,
                action,
                conditions: group.clone(),
            });
        }
        plan.uses_notify |= action == ScmpAction::Notify;
    }
    Ok(())
}

/// The libseccomp action of an OCI action with its `errnoRet` (`what` names the entry for errors).
pub(super) fn scmp_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    what: impl Fn() -> String,
) -> Result<ScmpAction, SeccompError> {
    use LinuxSeccompAction as A;
    let ret = || match errno_ret {
        None => Ok(libc::EPERM as u16),
        Some(value) => u16::try_from(value).map_err(|_| SeccompError::ErrnoRetRange { what: what(), value }),
    };
    let scmp = match action {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => return Ok(ScmpAction::Errno(i32::from(ret()?))),
        A::ScmpActTrace => return Ok(ScmpAction::Trace(ret()?)),
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActNotify => ScmpAction::Notify,
    };
    match errno_ret {
        Some(value) => Err(SeccompError::ErrnoRetNotAllowed {
            what: what(),
            action: action.to_string(),
            value,
        }),
        None => Ok(scmp),
    }
}

/// One argument condition; for `SCMP_CMP_MASKED_EQ`, `value` is the mask and `valueTwo` the datum (as runc).
fn condition(arg: &LinuxSeccompArg, what: &impl Fn() -> String) -> Result<ScmpArgCompare, SeccompError> {
    use LinuxSeccompOperator as O;
    let index = arg.index();
    if index >= MAX_ARGS {
        return Err(SeccompError::ArgIndex { what: what(), index });
    }
    let (op, datum) = match arg.op() {
        O::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        O::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        O::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        O::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        O::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        O::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        O::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(index as u32, op, datum))
}

/// `syscalls[3] (getcwd, chmod)`: how errors name a profile entry.
fn entry_label(index: usize, names: &[String]) -> String {
    const SHOWN: usize = 4;
    let shown: Vec<&str> = names.iter().take(SHOWN).map(String::as_str).collect();
    let mut label = format!("syscalls[{index}] ({}", shown.join(", "));
    if names.len() > SHOWN {
        label.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    label.push(')');
    label
}

/// `SCMP_ACT_ERRNO(38)`: an action as a profile author writes it.
pub(super) fn action_name(action: ScmpAction) -> String {
    match action {
        ScmpAction::KillProcess => "SCMP_ACT_KILL_PROCESS".into(),
        ScmpAction::KillThread => "SCMP_ACT_KILL_THREAD".into(),
        ScmpAction::Trap => "SCMP_ACT_TRAP".into(),
        ScmpAction::Notify => "SCMP_ACT_NOTIFY".into(),
        ScmpAction::Errno(e) => format!("SCMP_ACT_ERRNO({e})"),
        ScmpAction::Trace(e) => format!("SCMP_ACT_TRACE({e})"),
        ScmpAction::Log => "SCMP_ACT_LOG".into(),
        ScmpAction::Allow => "SCMP_ACT_ALLOW".into(),
        other => format!("{other:?}"),
    }
}
