//! cgroup v2 device control: a BPF_PROG_TYPE_CGROUP_DEVICE program built from the rules and
//! attached to the container's cgroup with raw bpf(2) calls (v2 has no devices.allow file).
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{CgroupError, DeviceRule};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One eBPF instruction (struct bpf_insn).
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0x0f) | (self.src << 4);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_AND_K: u8 = 0x54;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const JEQ_K: u8 = 0x15;
const EXIT: u8 = 0x95;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |acc, c| {
        acc | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// Compile the rules: later rules win, so they are tested first; no match means allowed
/// (the starting state before any rule, as with v1's inherited allow-all).
fn compile(rules: &[DeviceRule]) -> Result<Vec<Insn>, CgroupError> {
    // r2 = device type, r3 = requested access, r4 = major, r5 = minor.
    let mut p = vec![
        ins(LDX_H, 2, 1, 0, 0),
        ins(LDX_W, 3, 1, 0, 0),
        ins(ALU32_RSH_K, 3, 0, 0, 16),
        ins(LDX_W, 4, 1, 4, 0),
        ins(LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut block: Vec<(Insn, bool)> = Vec::new(); // (insn, jumps to next block)
        match rule.kind {
            'b' => block.push((ins(JNE_K, 2, 0, 0, DEV_BLOCK), true)),
            'c' => block.push((ins(JNE_K, 2, 0, 0, DEV_CHAR), true)),
            _ => {}
        }
        let acc = access_bits(&rule.access);
        if acc != ACC_READ | ACC_WRITE | ACC_MKNOD {
            block.push((ins(ALU32_MOV_X, 1, 3, 0, 0), false));
            block.push((ins(ALU32_AND_K, 1, 0, 0, acc), false));
            if rule.allow {
                // Allowed only when every requested access is in the rule.
                block.push((ins(JNE_X, 1, 3, 0, 0), true));
            } else {
                // Denied when any requested access is in the rule.
                block.push((ins(JEQ_K, 1, 0, 0, 0), true));
            }
        }
        for (reg, v) in [(4u8, rule.major), (5u8, rule.minor)] {
            if let Some(v) = v {
                let imm = i32::try_from(v).map_err(|_| {
                    CgroupError::Invalid(format!("device number {v} is out of range"))
                })?;
                block.push((ins(JNE_K, reg, 0, 0, imm), true));
            }
        }
        let unconditional = block.is_empty();
        block.push((ins(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow)), false));
        block.push((ins(EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        for (i, (mut insn, jumps)) in block.into_iter().enumerate() {
            if jumps {
                insn.off = i16::try_from(len - i - 1)
                    .map_err(|_| CgroupError::Invalid("device rule too large".into()))?;
            }
            p.push(insn);
        }
        // A rule matching everything ends the program: the verifier rejects unreachable code.
        if unconditional {
            return finish(p, rules.len());
        }
    }
    p.push(ins(ALU64_MOV_K, 0, 0, 0, 1));
    p.push(ins(EXIT, 0, 0, 0, 0));
    finish(p, rules.len())
}

fn finish(p: Vec<Insn>, rules: usize) -> Result<Vec<Insn>, CgroupError> {
    if p.len() > 4096 {
        return Err(CgroupError::Invalid(format!(
            "too many device rules ({rules}) for one BPF program"
        )));
    }
    Ok(p)
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-padded bpf_attr of the size we pass; the kernel reads/writes within it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn bpf_err(what: &str, dir: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path: format!("{} ({what})", dir.display()),
        source,
    }
}

fn load(insns: &[Insn], dir: &Path) -> Result<OwnedFd, CgroupError> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.bytes()).collect();
    let license = b"Apache\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, code.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, 1);
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    let name = b"skiff_devices";
    attr[48..48 + name.len()].copy_from_slice(name);
    put_u32(&mut attr, 68, BPF_CGROUP_DEVICE);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new fd that we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let msg = String::from_utf8_lossy(&log[..end]);
            // The verifier's reason comes before its closing statistics line.
            let msg = msg
                .lines()
                .filter(|l| !l.starts_with("processed ") && !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            Err(bpf_err(
                &format!("loading device BPF program: {msg}"),
                dir,
                e,
            ))
        }
    }
}

/// Ids of the device programs currently attached to the cgroup.
fn query(cg: &OwnedFd, dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let mut ids = vec![0u32; 64];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, cg.as_raw_fd() as u32);
    put_u32(&mut attr, 4, BPF_CGROUP_DEVICE);
    put_u64(&mut attr, 16, ids.as_mut_ptr() as u64);
    put_u32(&mut attr, 24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr).map_err(|e| bpf_err("querying device programs", dir, e))?;
    let cnt = u32::from_ne_bytes([attr[24], attr[25], attr[26], attr[27]]) as usize;
    ids.truncate(cnt.min(64));
    Ok(ids)
}

/// Replace the cgroup's device programs by one enforcing `rules`.
pub fn attach_device_filter(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let insns = compile(rules)?;
    let cg: OwnedFd = std::fs::File::open(dir)
        .map_err(|source| CgroupError::Io {
            path: dir.display().to_string(),
            source,
        })?
        .into();
    let old = query(&cg, dir)?;
    let prog = load(&insns, dir)?;
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, cg.as_raw_fd() as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_CGROUP_DEVICE);
    put_u32(&mut attr, 12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| bpf_err("attaching device program", dir, e))?;
    for id in old {
        let mut a = [0u8; 128];
        put_u32(&mut a, 0, id);
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut a) else {
            continue;
        };
        // SAFETY: BPF_PROG_GET_FD_BY_ID returned a new fd that we own.
        let old_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut d = [0u8; 128];
        put_u32(&mut d, 0, cg.as_raw_fd() as u32);
        put_u32(&mut d, 4, old_fd.as_raw_fd() as u32);
        put_u32(&mut d, 8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut d)
            .map_err(|e| bpf_err("detaching the previous device program", dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interpret the compiled program for one request, to check the rule semantics.
    fn run(p: &[Insn], typ: i32, access: i32, major: i32, minor: i32) -> i64 {
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = p[pc];
            let (d, s) = (i.dst as usize, i.src as usize);
            match i.code {
                LDX_H => r[d] = i64::from(typ),
                LDX_W => {
                    r[d] = match i.off {
                        0 => i64::from(typ | (access << 16)),
                        4 => i64::from(major),
                        _ => i64::from(minor),
                    }
                }
                ALU32_RSH_K => r[d] = (r[d] as u32 >> i.imm) as i64,
                ALU32_AND_K => r[d] = (r[d] as u32 & i.imm as u32) as i64,
                ALU32_MOV_X => r[d] = r[s] as u32 as i64,
                ALU64_MOV_K => r[d] = i64::from(i.imm),
                JNE_K if r[d] != i64::from(i.imm) => pc += i.off as usize,
                JNE_X if r[d] != r[s] => pc += i.off as usize,
                JEQ_K if r[d] == i64::from(i.imm) => pc += i.off as usize,
                JNE_K | JNE_X | JEQ_K => {}
                EXIT => return r[0],
                _ => panic!("unknown opcode"),
            }
            pc += 1;
        }
        panic!("no exit")
    }

    fn rule(
        allow: bool,
        kind: char,
        major: Option<i64>,
        minor: Option<i64>,
        a: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: a.into(),
        }
    }

    #[test]
    fn semantics() {
        let mut rules = vec![rule(false, 'a', None, None, "rwm")];
        rules.extend(crate::cgroups::devices::default_allowed());
        rules.push(rule(false, 'c', Some(1), Some(3), "w"));
        let p = compile(&rules).expect("compile");
        // /dev/null read allowed, write denied by the later rule.
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 3), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 0);
        // Unlisted device denied; mknod of any char device allowed.
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 4, 1), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 4, 1), 1);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 0);
        // pts wildcard minor.
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 136, 7), 1);
        // No rules: allowed.
        assert_eq!(
            run(&compile(&[]).expect("compile"), DEV_BLOCK, ACC_READ, 8, 0),
            1
        );
    }
}
