//! seccomp: compiling `linux.seccomp` to BPF and installing it right before exec.
//!
//! The compiler is our own (not `seccompiler`) because OCI profiles need several actions in one
//! filter (ALLOW for most calls, ERRNO with per-rule errno for some), three x86 ABIs in one
//! program, and 64-bit argument comparisons with all seven operators. The program is built in the
//! parent before fork so the child only makes one `seccomp(2)` call.
//!
//! Layout of a generated program (classic BPF, 32-bit accumulator):
//! ```text
//!   load arch; x86_64? -> X64;  i386 (if listed)? -> X86;  else RET bad-arch (KILL_PROCESS)
//! X64: load nr; nr >= 0x40000000 (x32 ABI)? -> X32 if listed, else RET bad-arch
//!      nr above every syscall the profile names (and default denies)? RET ENOSYS (as runc)
//!      per syscall number: JEQ nr ? block : next;  block = rules with args in profile order
//!      (first match returns its action), then the unconditional rule if any, else RET default
//!      RET default
//! X32 / X86: the same with that ABI's syscall numbers
//! ```
use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};

/// Errors while compiling or installing a seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is invalid or unsupported (field named in the message).
    #[error("linux.seccomp: {0}")]
    Invalid(String),
    /// The kernel refused the filter.
    #[error("installing seccomp filter: {0}")]
    Install(#[source] std::io::Error),
}

/// Actions skiff implements, in OCI spelling (for `skiff features`).
pub const SUPPORTED_ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

/// Argument comparison operators skiff implements (for `skiff features`).
pub const SUPPORTED_OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// Architectures whose syscalls a filter can match on this (x86_64) build (for `skiff features`).
pub const SUPPORTED_ARCHES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

/// Filter flags skiff recognises in a profile (for `skiff features`: `knownFlags`).
pub const KNOWN_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// Filter flags skiff passes to the kernel (for `skiff features`: `supportedFlags`).
pub const SUPPORTED_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_LOG",
];

/// Whether this build can enforce seccomp at all (for `skiff features`).
pub const ENABLED: bool = cfg!(target_arch = "x86_64");

/// The `linux.seccomp` object of `skiff features`, built from the lists above.
pub fn features() -> serde_json::Value {
    serde_json::json!({
        "enabled": ENABLED,
        "actions": SUPPORTED_ACTIONS,
        "operators": SUPPORTED_OPERATORS,
        "archs": SUPPORTED_ARCHES,
        "knownFlags": KNOWN_FLAGS,
        "supportedFlags": SUPPORTED_FLAGS,
    })
}

// Kernel ABI constants (linux/seccomp.h, linux/audit.h, linux/filter.h).
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const BPF_MAXINSNS: usize = 4096;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// BPF_LD | BPF_W | BPF_ABS
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGT_K: u16 = 0x05 | 0x20;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
const BPF_RET_K: u16 = 0x06;

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

/// A compiled filter, made in the parent before fork so the child only installs it.
#[derive(Debug, Clone, Default)]
pub struct SeccompProgram {
    insns: Vec<BpfInsn>,
    flags: u32,
}

impl SeccompProgram {
    /// The BPF instructions (exposed for tests and debugging).
    pub fn instructions(&self) -> &[BpfInsn] {
        &self.insns
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits passed to `seccomp(2)`.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Install the filter on the calling thread (all threads with TSYNC). Does not allocate, so
    /// it is safe in a freshly forked child. Needs no_new_privs or CAP_SYS_ADMIN.
    pub fn install(&self) -> Result<(), SeccompError> {
        #[repr(C)]
        struct SockFprog {
            len: libc::c_ushort,
            filter: *const BpfInsn,
        }
        let len = libc::c_ushort::try_from(self.insns.len())
            .map_err(|_| SeccompError::Invalid("filter too large".into()))?;
        let prog = SockFprog {
            len,
            filter: self.insns.as_ptr(),
        };
        // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel
        // copies the program.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags as libc::c_ulong,
                &prog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::Install(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// The x86 ABIs a filter can cover; the kernel reports them via `seccomp_data.arch` (and the x32
/// bit in the syscall number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Abi {
    X86_64,
    X32,
    I386,
}

/// One rule after resolution: ANDed conditions and the BPF return value.
#[derive(Debug, Clone)]
struct Rule {
    conds: Vec<LinuxSeccompArg>,
    ret: u32,
}

/// Compile the profile; `None` when the config has no seccomp section.
pub fn compile(cfg: Option<&LinuxSeccomp>) -> Result<Option<SeccompProgram>, SeccompError> {
    let Some(cfg) = cfg else { return Ok(None) };
    if !ENABLED {
        return Err(SeccompError::Invalid(
            "seccomp is only supported on x86_64 builds of skiff".into(),
        ));
    }
    if cfg.listener_path().is_some() {
        return Err(SeccompError::Invalid(
            "listenerPath: SCMP_ACT_NOTIFY (seccomp user notification) is not supported by skiff"
                .into(),
        ));
    }
    let default_ret = action_ret(
        cfg.default_action(),
        cfg.default_errno_ret(),
        "defaultAction",
    )?;
    if cfg.default_errno_ret().is_some()
        && !matches!(
            cfg.default_action(),
            LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace
        )
    {
        return Err(SeccompError::Invalid(format!(
            "defaultErrnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {}",
            cfg.default_action()
        )));
    }

    let flags = compile_flags(cfg.flags().as_deref().unwrap_or(&[]))?;

    let mut abis = vec![Abi::X86_64];
    for arch in cfg.architectures().as_deref().unwrap_or(&[]) {
        match arch {
            Arch::ScmpArchX86_64 | Arch::ScmpArchNative => {}
            Arch::ScmpArchX32 => abis.push(Abi::X32),
            Arch::ScmpArchX86 => abis.push(Abi::I386),
            other => {
                tracing::debug!(arch = %other, "seccomp: ignoring architecture foreign to this host")
            }
        }
    }
    abis.sort();
    abis.dedup();

    // Resolve every entry into per-ABI, per-syscall-number rule lists, keeping profile order.
    let mut tables: BTreeMap<Abi, BTreeMap<u32, Vec<Rule>>> = BTreeMap::new();
    for (i, sc) in cfg.syscalls().as_deref().unwrap_or(&[]).iter().enumerate() {
        let field = format!("syscalls[{i}]");
        let ret = action_ret(sc.action(), sc.errno_ret(), &format!("{field}.action"))?;
        let conds = sc.args().clone().unwrap_or_default();
        for (j, a) in conds.iter().enumerate() {
            if a.index() > 5 {
                return Err(SeccompError::Invalid(format!(
                    "{field}.args[{j}].index: {} is out of range (0..=5)",
                    a.index()
                )));
            }
        }
        if sc.names().is_empty() {
            return Err(SeccompError::Invalid(format!("{field}.names: empty")));
        }
        for name in sc.names() {
            let mut known = false;
            for &abi in &abis {
                if let Some(nr) = syscall_number(abi, name) {
                    known = true;
                    tables
                        .entry(abi)
                        .or_default()
                        .entry(nr)
                        .or_default()
                        .push(Rule {
                            conds: conds.clone(),
                            ret,
                        });
                }
            }
            if !known {
                tracing::debug!(syscall = %name, "seccomp: unknown syscall name skipped");
            }
        }
    }

    let insns = generate(&abis, &tables, default_ret)?;
    Ok(Some(SeccompProgram { insns, flags }))
}

fn compile_flags(flags: &[LinuxSeccompFilterFlag]) -> Result<u32, SeccompError> {
    let mut bits = 0;
    for f in flags {
        bits |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                // Only meaningful for user notification, which skiff refuses; the kernel would
                // reject it without a listener, so it is accepted and not passed on.
                tracing::debug!("seccomp: WAIT_KILLABLE_RECV ignored (no notify listener)");
                0
            }
        };
    }
    Ok(bits)
}

/// The BPF return value for an OCI action.
fn action_ret(
    action: LinuxSeccompAction,
    errno: Option<u32>,
    field: &str,
) -> Result<u32, SeccompError> {
    let data = |e: Option<u32>| -> Result<u32, SeccompError> {
        let e = e.unwrap_or(libc::EPERM as u32);
        if e > 0xffff {
            return Err(SeccompError::Invalid(format!(
                "{field}: errno {e} does not fit the 16-bit SECCOMP_RET_DATA"
            )));
        }
        Ok(e)
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data(errno)?,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data(errno)?,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Invalid(format!(
                "{field}: SCMP_ACT_NOTIFY (seccomp user notification) is not supported by skiff"
            )))
        }
    })
}

/// Syscall numbers of the x32 ABI that differ from x86_64 (kernel syscall_64.tbl, 512..=547).
const X32_SPECIAL: &[&str] = &[
    "rt_sigaction",
    "rt_sigreturn",
    "ioctl",
    "readv",
    "writev",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "execve",
    "ptrace",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "sigaltstack",
    "timer_create",
    "mq_notify",
    "kexec_load",
    "waitid",
    "set_robust_list",
    "get_robust_list",
    "vmsplice",
    "move_pages",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "recvmmsg",
    "sendmmsg",
    "process_vm_readv",
    "process_vm_writev",
    "setsockopt",
    "getsockopt",
    "io_setup",
    "io_submit",
    "execveat",
    "preadv2",
    "pwritev2",
];

/// x86_64-only syscalls (abi "64" in syscall_64.tbl) with no x32 counterpart at all.
const X64_ONLY: &[&str] = &[
    "uselib",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
    "set_thread_area",
    "get_thread_area",
    "epoll_ctl_old",
    "epoll_wait_old",
    "vserver",
    "uretprobe",
];

/// Map a syscall name to its number for one ABI; `None` if that ABI has no such call.
fn syscall_number(abi: Abi, name: &str) -> Option<u32> {
    match abi {
        Abi::X86_64 => syscalls::x86_64::Sysno::from_str(name)
            .ok()
            .map(|s| s.id() as u32),
        Abi::I386 => syscalls::x86::Sysno::from_str(name)
            .ok()
            .map(|s| s.id() as u32),
        Abi::X32 => {
            if let Some(i) = X32_SPECIAL.iter().position(|n| *n == name) {
                return Some(X32_SYSCALL_BIT | (512 + i as u32));
            }
            if X64_ONLY.contains(&name) {
                return None;
            }
            syscall_number(Abi::X86_64, name).map(|nr| nr | X32_SYSCALL_BIT)
        }
    }
}

/// A tiny assembler: instructions with symbolic jump targets, resolved at the end.
#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: Vec<Option<usize>>,
}

#[derive(Clone, Copy)]
enum Target {
    Next,
    Label(usize),
}

enum Op {
    Stmt(u16, u32),
    Jump(u16, u32, Target, Target),
    Ja(usize),
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.ops.len());
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.ops.push(Op::Stmt(code, k));
    }
    fn ret(&mut self, k: u32) {
        self.stmt(BPF_RET_K, k);
    }
    fn load(&mut self, off: u32) {
        self.stmt(BPF_LD_W_ABS, off);
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.ops.push(Op::Jump(code, k, jt, jf));
    }
    fn ja(&mut self, l: usize) {
        self.ops.push(Op::Ja(l));
    }

    fn finish(self) -> Result<Vec<BpfInsn>, SeccompError> {
        let too_big = || SeccompError::Invalid("generated filter exceeds kernel limits".into());
        let resolve = |pc: usize, t: Target| -> Result<usize, SeccompError> {
            match t {
                Target::Next => Ok(0),
                Target::Label(l) => {
                    let at = self.labels[l].ok_or_else(too_big)?;
                    at.checked_sub(pc + 1).ok_or_else(too_big)
                }
            }
        };
        let mut out = Vec::with_capacity(self.ops.len());
        for (pc, op) in self.ops.iter().enumerate() {
            out.push(match *op {
                Op::Stmt(code, k) => BpfInsn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                },
                Op::Jump(code, k, jt, jf) => BpfInsn {
                    code,
                    jt: u8::try_from(resolve(pc, jt)?).map_err(|_| too_big())?,
                    jf: u8::try_from(resolve(pc, jf)?).map_err(|_| too_big())?,
                    k,
                },
                Op::Ja(l) => BpfInsn {
                    code: BPF_JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: u32::try_from(resolve(pc, Target::Label(l))?).map_err(|_| too_big())?,
                },
            });
        }
        if out.len() > BPF_MAXINSNS {
            return Err(SeccompError::Invalid(format!(
                "the profile compiles to {} BPF instructions, more than the kernel's {}",
                out.len(),
                BPF_MAXINSNS
            )));
        }
        Ok(out)
    }
}

/// The action used for a syscall from an ABI the profile does not list (libseccomp's "bad arch"
/// action; KILL_PROCESS so a multi-threaded process cannot survive half-dead).
const RET_BAD_ARCH: u32 = RET_KILL_PROCESS;

fn generate(
    abis: &[Abi],
    tables: &BTreeMap<Abi, BTreeMap<u32, Vec<Rule>>>,
    default_ret: u32,
) -> Result<Vec<BpfInsn>, SeccompError> {
    let mut a = Asm::default();
    let empty = BTreeMap::new();
    let sec_x64 = a.label();
    let sec_x32 = a.label();
    let sec_i386 = a.label();
    let has = |abi| abis.contains(&abi);

    a.load(OFF_ARCH);
    a.jump(
        BPF_JMP_JEQ_K,
        AUDIT_ARCH_X86_64,
        Target::Next,
        Target::Label(sec_i386),
    );
    a.ja(sec_x64);
    a.bind(sec_i386);
    let i386_body = a.label();
    if has(Abi::I386) {
        a.jump(
            BPF_JMP_JEQ_K,
            AUDIT_ARCH_I386,
            Target::Label(i386_body),
            Target::Next,
        );
    }
    a.ret(RET_BAD_ARCH);
    if has(Abi::I386) {
        a.bind(i386_body);
        a.load(OFF_NR);
        emit_abi(
            &mut a,
            tables.get(&Abi::I386).unwrap_or(&empty),
            default_ret,
        );
    }

    a.bind(sec_x64);
    a.load(OFF_NR);
    let native = a.label();
    a.jump(
        BPF_JMP_JGE_K,
        X32_SYSCALL_BIT,
        Target::Next,
        Target::Label(native),
    );
    if has(Abi::X32) {
        a.ja(sec_x32);
    } else {
        a.ret(RET_BAD_ARCH);
    }
    a.bind(native);
    emit_abi(
        &mut a,
        tables.get(&Abi::X86_64).unwrap_or(&empty),
        default_ret,
    );
    a.bind(sec_x32);
    if has(Abi::X32) {
        emit_abi(&mut a, tables.get(&Abi::X32).unwrap_or(&empty), default_ret);
    }
    a.finish()
}

/// Emit the per-syscall blocks for one ABI; the syscall number is in the accumulator on entry.
fn emit_abi(a: &mut Asm, table: &BTreeMap<u32, Vec<Rule>>, default_ret: u32) {
    // Like runc: a syscall newer than every syscall the profile names gets ENOSYS instead of a
    // denying default action, so libc falls back to an older call (the profile cannot have meant
    // to allow or deny a syscall it predates).
    let denies = !matches!(default_ret, RET_ALLOW | RET_LOG);
    if let (true, Some(&max)) = (denies, table.keys().next_back()) {
        let skip = a.label();
        a.jump(BPF_JMP_JGT_K, max, Target::Next, Target::Label(skip));
        a.ret(RET_ERRNO | libc::ENOSYS as u32);
        a.bind(skip);
    }
    for (&nr, rules) in table {
        // Fast path: a single unconditional rule whose action is the default needs no block.
        let unconditional = rules.iter().find(|r| r.conds.is_empty()).map(|r| r.ret);
        let conditional: Vec<&Rule> = rules.iter().filter(|r| !r.conds.is_empty()).collect();
        if conditional.is_empty() && unconditional == Some(default_ret) {
            continue;
        }
        if conditional.is_empty() {
            let ret = unconditional.unwrap_or(default_ret);
            let skip = a.label();
            a.jump(BPF_JMP_JEQ_K, nr, Target::Next, Target::Label(skip));
            a.ret(ret);
            a.bind(skip);
            continue;
        }
        // Conditional rules: `JEQ nr ? block : JA after` keeps every conditional jump short.
        let block = a.label();
        let after = a.label();
        a.jump(BPF_JMP_JEQ_K, nr, Target::Label(block), Target::Next);
        a.ja(after);
        a.bind(block);
        for rule in conditional {
            let fail = a.label();
            for c in &rule.conds {
                emit_cond(a, c, fail);
            }
            a.ret(rule.ret);
            a.bind(fail);
        }
        a.ret(unconditional.unwrap_or(default_ret));
        a.bind(after);
        // The accumulator was clobbered by argument loads only inside the block, which always
        // returns, so the syscall number is still loaded here.
    }
    a.ret(default_ret);
}

/// Emit one 64-bit argument comparison; jumps to `fail` when it does not hold.
fn emit_cond(a: &mut Asm, c: &LinuxSeccompArg, fail: usize) {
    let lo_off = OFF_ARGS + 8 * c.index() as u32;
    let hi_off = lo_off + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let f = Target::Label(fail);
    let n = Target::Next;
    let ok = a.label();
    let okt = Target::Label(ok);
    match c.op() {
        LinuxSeccompOperator::ScmpCmpEq => {
            let (hi, lo) = split(c.value());
            a.load(hi_off);
            a.jump(BPF_JMP_JEQ_K, hi, n, f);
            a.load(lo_off);
            a.jump(BPF_JMP_JEQ_K, lo, n, f);
        }
        LinuxSeccompOperator::ScmpCmpNe => {
            let (hi, lo) = split(c.value());
            a.load(hi_off);
            a.jump(BPF_JMP_JEQ_K, hi, n, okt);
            a.load(lo_off);
            a.jump(BPF_JMP_JEQ_K, lo, f, n);
        }
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            let (hi, lo) = split(c.value());
            let last = if c.op() == LinuxSeccompOperator::ScmpCmpGt {
                BPF_JMP_JGT_K
            } else {
                BPF_JMP_JGE_K
            };
            a.load(hi_off);
            a.jump(BPF_JMP_JGT_K, hi, okt, n);
            a.jump(BPF_JMP_JEQ_K, hi, n, f);
            a.load(lo_off);
            a.jump(last, lo, n, f);
        }
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            let (hi, lo) = split(c.value());
            // lo < v  <=>  !(lo >= v);  lo <= v  <=>  !(lo > v)
            let last = if c.op() == LinuxSeccompOperator::ScmpCmpLt {
                BPF_JMP_JGE_K
            } else {
                BPF_JMP_JGT_K
            };
            a.load(hi_off);
            a.jump(BPF_JMP_JGE_K, hi, n, okt);
            a.jump(BPF_JMP_JEQ_K, hi, n, f);
            a.load(lo_off);
            a.jump(last, lo, f, n);
        }
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (mhi, mlo) = split(c.value());
            let (dhi, dlo) = split(c.value_two().unwrap_or(0));
            a.load(hi_off);
            a.stmt(BPF_ALU_AND_K, mhi);
            a.jump(BPF_JMP_JEQ_K, dhi, n, f);
            a.load(lo_off);
            a.stmt(BPF_ALU_AND_K, mlo);
            a.jump(BPF_JMP_JEQ_K, dlo, n, f);
        }
    }
    a.bind(ok);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse an OCI seccomp object from JSON.
    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("test profile is valid JSON")
    }

    fn compiled(json: &str) -> SeccompProgram {
        compile(Some(&profile(json)))
            .expect("profile compiles")
            .expect("profile present")
    }

    /// How a forked child ended.
    #[derive(Debug, PartialEq, Eq)]
    enum End {
        Exit(i32),
        Signal(i32),
    }

    /// Fork; in the child set no_new_privs, install `prog`, run `body` and exit with its result.
    /// `body` must only make raw syscalls (the child of a threaded test binary must not allocate).
    fn in_child(prog: &SeccompProgram, body: fn() -> i32) -> End {
        // SAFETY: the child only makes async-signal-safe raw syscalls, then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: raw syscalls and _exit only.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(250);
                }
                if prog.install().is_err() {
                    libc::_exit(251);
                }
                libc::_exit(body());
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        if libc::WIFSIGNALED(status) {
            End::Signal(libc::WTERMSIG(status))
        } else {
            End::Exit(libc::WEXITSTATUS(status))
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Values probed by the comparison tests, chosen around V = 0x1_0000_0005 in both words.
    const V: u64 = 0x1_0000_0005;
    const PROBES: [u64; 8] = [
        0x0,
        0x5,
        0x1_0000_0004,
        0x1_0000_0005,
        0x1_0000_0006,
        0x2_0000_0000,
        0x0_ffff_ffff,
        0xffff_ffff_ffff_ffff,
    ];

    /// Call umask(probe) for each probe; bit i set when the filter returned errno 99.
    fn probe_umask() -> i32 {
        let mut bits = 0;
        for (i, p) in PROBES.iter().enumerate() {
            // SAFETY: umask with any value is harmless in the child.
            let r = unsafe { libc::syscall(libc::SYS_umask, *p) };
            if r == -1 && errno() == 99 {
                bits |= 1 << i;
            }
        }
        bits
    }

    #[test]
    fn none_without_section() {
        assert!(compile(None).expect("no section").is_none());
    }

    #[test]
    fn all_seven_operators_compare_64_bit_values() {
        type Pred = fn(u64) -> bool;
        let ops: [(&str, Pred); 6] = [
            ("SCMP_CMP_EQ", |x| x == V),
            ("SCMP_CMP_NE", |x| x != V),
            ("SCMP_CMP_LT", |x| x < V),
            ("SCMP_CMP_LE", |x| x <= V),
            ("SCMP_CMP_GT", |x| x > V),
            ("SCMP_CMP_GE", |x| x >= V),
        ];
        for (op, pred) in ops {
            let prog = compiled(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["umask"],
                "action":"SCMP_ACT_ERRNO","errnoRet":99,"args":[{{"index":0,"value":{V},"op":"{op}"}}]}}]}}"#
            ));
            let want: i32 = PROBES
                .iter()
                .enumerate()
                .filter(|(_, p)| pred(**p))
                .map(|(i, _)| 1 << i)
                .sum();
            assert_eq!(in_child(&prog, probe_umask), End::Exit(want), "{op}");
        }
        // MASKED_EQ: value is the mask, valueTwo the expected masked value.
        let (mask, datum) = (0x1_0000_00f0u64, 0x1_0000_0000u64);
        let prog = compiled(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["umask"],
            "action":"SCMP_ACT_ERRNO","errnoRet":99,
            "args":[{{"index":0,"value":{mask},"valueTwo":{datum},"op":"SCMP_CMP_MASKED_EQ"}}]}}]}}"#
        ));
        let want: i32 = PROBES
            .iter()
            .enumerate()
            .filter(|(_, p)| *p & mask == datum)
            .map(|(i, _)| 1 << i)
            .sum();
        assert_eq!(in_child(&prog, probe_umask), End::Exit(want), "MASKED_EQ");
    }

    #[test]
    fn args_are_anded_and_entries_ored() {
        let prog = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["getcpu"],"action":"SCMP_ACT_ERRNO","errnoRet":99,
               "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":2,"value":7,"op":"SCMP_CMP_EQ"}]},
              {"names":["getcpu"],"action":"SCMP_ACT_ERRNO","errnoRet":98,
               "args":[{"index":2,"value":9,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        fn body() -> i32 {
            let call = |a2: u64| {
                // SAFETY: getcpu with NULL outputs only returns a status.
                let r = unsafe { libc::syscall(libc::SYS_getcpu, 0usize, 0usize, a2) };
                if r == -1 {
                    errno()
                } else {
                    0
                }
            };
            // (7 -> 99), (8 -> allowed), (9 -> 98)
            if call(7) != 99 {
                return 1;
            }
            if call(8) != 0 {
                return 2;
            }
            if call(9) != 98 {
                return 3;
            }
            0
        }
        assert_eq!(in_child(&prog, body), End::Exit(0));
    }

    #[test]
    fn default_errno_ret_and_allow_list() {
        let prog = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":97,"syscalls":[
              {"names":["exit_group","exit","getppid"],"action":"SCMP_ACT_ALLOW"},
              {"names":["no_such_syscall_xyz"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        fn body() -> i32 {
            // SAFETY: plain syscalls.
            unsafe {
                if libc::syscall(libc::SYS_getppid) <= 0 {
                    return 1;
                }
                if libc::syscall(libc::SYS_dup, 1) != -1 || errno() != 97 {
                    return 2;
                }
            }
            0
        }
        assert_eq!(in_child(&prog, body), End::Exit(0));
    }

    #[test]
    fn syscalls_newer_than_the_profile_get_enosys() {
        let prog = compiled(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
              {"names":["exit_group","exit","getppid"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        fn body() -> i32 {
            // SAFETY: plain syscalls; 1000 is not a syscall number.
            unsafe {
                if libc::syscall(libc::SYS_dup, 1) != -1 || errno() != libc::EPERM {
                    return 1;
                }
                if libc::syscall(1000) != -1 || errno() != libc::ENOSYS {
                    return 2;
                }
            }
            0
        }
        assert_eq!(in_child(&prog, body), End::Exit(0));
        // A permissive default needs no stub.
        let allow = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["getppid"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        assert!(!allow
            .instructions()
            .iter()
            .any(|i| i.k == RET_ERRNO | libc::ENOSYS as u32));
    }

    #[test]
    fn kill_trap_actions() {
        let kill = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["getppid"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        );
        fn body() -> i32 {
            // SAFETY: plain syscall.
            unsafe { libc::syscall(libc::SYS_getppid) };
            0
        }
        assert_eq!(in_child(&kill, body), End::Signal(libc::SIGSYS));
        let trap = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["getppid"],"action":"SCMP_ACT_TRAP"}]}"#,
        );
        assert_eq!(in_child(&trap, body), End::Signal(libc::SIGSYS));
        let log = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["getppid"],"action":"SCMP_ACT_LOG"}]}"#,
        );
        assert_eq!(in_child(&log, body), End::Exit(0));
    }

    /// i386 getpid (20) through `int 0x80` from this 64-bit process.
    fn int80_getpid() -> i32 {
        let mut ret: i64 = 20;
        // SAFETY: int 0x80 with eax=20 (getpid) has no memory effects; registers r8-r11 are
        // zeroed by the kernel on the compat path, so mark them clobbered.
        unsafe {
            std::arch::asm!("int 0x80", inlateout("rax") ret, out("r8") _, out("r9") _,
                out("r10") _, out("r11") _);
        }
        let ret = ret as i32;
        if ret < 0 {
            -ret
        } else {
            0
        }
    }

    /// x32 getpid (39 | x32 bit) through `syscall`.
    fn x32_getpid() -> i32 {
        // SAFETY: plain syscall; an unsupported ABI just fails.
        let r = unsafe { libc::syscall((X32_SYSCALL_BIT | 39) as libc::c_long) };
        if r == -1 {
            errno()
        } else {
            0
        }
    }

    #[test]
    fn foreign_abis_are_killed_unless_listed() {
        let only64 = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
               "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":77}]}"#,
        );
        assert_eq!(in_child(&only64, int80_getpid), End::Signal(libc::SIGSYS));
        assert_eq!(in_child(&only64, x32_getpid), End::Signal(libc::SIGSYS));

        let all = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
               "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
               "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":77}]}"#,
        );
        assert_eq!(in_child(&all, int80_getpid), End::Exit(77));
        assert_eq!(in_child(&all, x32_getpid), End::Exit(77));
    }

    #[test]
    fn x32_numbers_follow_the_kernel_table() {
        assert_eq!(syscall_number(Abi::X32, "read"), Some(X32_SYSCALL_BIT));
        assert_eq!(
            syscall_number(Abi::X32, "ioctl"),
            Some(X32_SYSCALL_BIT | 514)
        );
        assert_eq!(
            syscall_number(Abi::X32, "pwritev2"),
            Some(X32_SYSCALL_BIT | 547)
        );
        assert_eq!(syscall_number(Abi::X32, "uselib"), None);
        assert_eq!(syscall_number(Abi::X86_64, "ioctl"), Some(16));
        assert_eq!(syscall_number(Abi::I386, "socketcall"), Some(102));
        assert_eq!(syscall_number(Abi::X86_64, "socketcall"), None);
    }

    #[test]
    fn refuses_notify_and_bad_fields() {
        let notify = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["getpid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        let e = compile(Some(&notify)).expect_err("notify refused");
        assert!(e.to_string().contains("SCMP_ACT_NOTIFY"), "{e}");
        assert!(e.to_string().contains("syscalls[0]"), "{e}");
        let listener =
            profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock"}"#);
        assert!(compile(Some(&listener)).is_err());
        let bad_index = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],
              "action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let e = compile(Some(&bad_index)).expect_err("index 6 refused");
        assert!(e.to_string().contains("args[0].index"), "{e}");
        let bad_default = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":3}"#);
        assert!(compile(Some(&bad_default)).is_err());
        // Unknown action names and flags are rejected when the config is parsed.
        assert!(
            serde_json::from_str::<LinuxSeccomp>(r#"{"defaultAction":"SCMP_ACT_FLY"}"#).is_err()
        );
    }

    #[test]
    fn flags_are_passed_to_the_kernel() {
        let p = compiled(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC",
              "SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
        );
        assert_eq!(p.flags(), FLAG_TSYNC | FLAG_LOG | FLAG_SPEC_ALLOW);
        fn body() -> i32 {
            0
        }
        assert_eq!(in_child(&p, body), End::Exit(0));
    }

    fn docker_default() -> SeccompProgram {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../conformance/testdata/seccomp/docker-default.json"
        );
        let text = std::fs::read_to_string(path).expect("docker-default.json test data");
        compiled(&text)
    }

    #[test]
    fn docker_default_profile_refuses_dangerous_calls() {
        let prog = docker_default();
        assert!(prog.instructions().len() < BPF_MAXINSNS);
        fn body() -> i32 {
            // SAFETY: raw syscalls whose failure is the point; none succeed under the profile.
            unsafe {
                if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) != -1
                    || errno() != libc::EPERM
                {
                    return 1;
                }
                if libc::syscall(libc::SYS_mount, 0usize, 0usize, 0usize, 0usize, 0usize) != -1
                    || errno() != libc::EPERM
                {
                    return 2;
                }
                if libc::syscall(libc::SYS_keyctl, 0usize) != -1 || errno() != libc::EPERM {
                    return 3;
                }
                if libc::syscall(libc::SYS_clone3, 0usize, 0usize) != -1 || errno() != libc::ENOSYS
                {
                    return 4;
                }
                if libc::syscall(libc::SYS_socket, 40, libc::SOCK_STREAM, 0) != -1
                    || errno() != libc::EPERM
                {
                    return 5;
                }
                if libc::syscall(libc::SYS_personality, 1usize) != -1 || errno() != libc::EPERM {
                    return 6;
                }
                // clone with a namespace flag is refused, plain fork-like clone is allowed
                if libc::syscall(
                    libc::SYS_clone,
                    libc::CLONE_NEWUTS as usize | libc::SIGCHLD as usize,
                    0usize,
                ) != -1
                    || errno() != libc::EPERM
                {
                    return 7;
                }
                if libc::syscall(libc::SYS_getppid) <= 0 {
                    return 8;
                }
                let fd = libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0 {
                    return 9;
                }
                if libc::syscall(libc::SYS_personality, 0xffff_ffffusize) == -1 {
                    return 10;
                }
            }
            0
        }
        assert_eq!(in_child(&docker_default(), body), End::Exit(0));
        let _ = prog;
    }

    #[test]
    fn docker_default_profile_covers_the_compat_abis() {
        // i386 unshare (310) through int 0x80 and x32 unshare (272 | x32 bit): the profile lists
        // both ABIs, so they get its EPERM rather than being allowed or killed.
        fn i386_unshare() -> i32 {
            let mut ret: i64 = 310;
            // SAFETY: the filter answers before the kernel runs anything; see int80_getpid.
            unsafe {
                std::arch::asm!("int 0x80", inlateout("rax") ret, out("r8") _, out("r9") _,
                    out("r10") _, out("r11") _);
            }
            -(ret as i32)
        }
        fn x32_unshare() -> i32 {
            // SAFETY: refused by the filter before it runs.
            let r = unsafe { libc::syscall((X32_SYSCALL_BIT | 272) as libc::c_long, 0usize) };
            if r == -1 {
                errno()
            } else {
                0
            }
        }
        let prog = docker_default();
        assert_eq!(in_child(&prog, i386_unshare), End::Exit(libc::EPERM));
        assert_eq!(in_child(&prog, x32_unshare), End::Exit(libc::EPERM));
    }

    #[test]
    fn busybox_runs_under_docker_default_profile() {
        if !std::path::Path::new("/bin/busybox").exists() {
            eprintln!("SKIP: /bin/busybox not installed");
            return;
        }
        fn body() -> i32 {
            // Static strings so the child does not allocate before execve.
            let path = c"/bin/busybox";
            let argv = [
                c"sh".as_ptr(),
                c"-c".as_ptr(),
                c"ls / >/dev/null && echo hi | grep -q hi && exit 42".as_ptr(),
                std::ptr::null(),
            ];
            let envp = [c"PATH=/bin:/usr/bin".as_ptr(), std::ptr::null()];
            // SAFETY: NUL-terminated argv/envp arrays of static C strings.
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            100
        }
        assert_eq!(in_child(&docker_default(), body), End::Exit(42));
    }
}
