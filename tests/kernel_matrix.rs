//! The tool on the kernels most production MySQL hosts run, which lack the
//! `sock_recv_length`/`sock_send_length` tracepoints (Linux 6.3): Debian 12's own 6.1
//! (the newest `linux-image-6.1.0-*-cloud-amd64-unsigned`) and Ubuntu 22.04's 5.15
//! (its release kernel, pinned by SHA-256, booted with `lockdown=integrity` as under
//! Secure Boot). Each boots under qemu (TCG: nested KVM hangs here) with one initramfs
//! holding busybox, the release binary, the `mariadb` CLI and their libraries
//! (`kernel_matrix/init` runs the plan and prints markers on the serial console; both
//! kernels have what it needs built in, no modules). There `doctor` must say the tp_btf
//! hooks are missing and that the socket tier uses fexit, and each lab scenario must get
//! its expected verdict in both capture tiers. On this host (which refuses fexit), with
//! the tp_btf hooks ignored, `--capture socket` must fall back to the syscall tier, say
//! so in one line, and still judge right. Under `lockdown=confidentiality` (5.15) the
//! kernel withholds tracefs: `doctor` and the lab must fail saying so.
use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use handshake_trace_tests::*;
use serde_json::Value;

/// Lab scenarios on the built-in servers (their clients, the lab's own and the mariadb
/// CLI, run in the VM): all seven (the signal programs, a late greeting) on every
/// kernel, in both tiers. Each scenario costs a few seconds per tier under TCG.
const SCENARIOS: &[&str] = &["connect-timeout", "timeout-alarm", "timeout-poll", "starved-client", "slow-dns", "normal", "wrong-password"];
const TIERS: [&str; 2] = ["syscalls", "socket"];
/// TCG is slow: a boot takes seconds, each scenario tens of seconds; generous.
const VM_TIMEOUT: Duration = Duration::from_secs(900);

/// Downloaded kernels and built initramfs images, kept between runs.
fn matrix_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/kernel-matrix")
}

/// Run a command to success; its stdout.
fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ABI number of a `linux-image-6.1.0-N-cloud-amd64-unsigned` package.
fn abi(package: &str) -> Option<u32> {
    package.strip_prefix("linux-image-6.1.0-")?.split('-').next()?.parse().ok()
}

/// The newest Debian 6.1 cloud kernel package apt knows of.
fn newest_kernel_package() -> String {
    let list = output(Command::new("apt-cache").args(["search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$"]));
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|p| abi(p).is_some())
        .max_by_key(|p| abi(p))
        .expect("apt knows no linux-image-6.1.0-*-cloud-amd64-unsigned (Debian 12 sources; apt-get update)")
        .to_string()
}

/// Debian 12's kernel: the newest 6.1 cloud image, downloaded with `apt-get download`
/// and unpacked once per version.
fn debian_6_1() -> PathBuf {
    let package = newest_kernel_package();
    let dir = matrix_dir();
    let root = dir.join(&package);
    if !root.join("boot").is_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        output(Command::new("apt-get").args(["download", "-q", &package]).current_dir(&dir));
        let deb = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{package}_")))
            .expect("the downloaded .deb");
        unpack(&deb, &root);
    }
    vmlinuz(&root)
}

/// Ubuntu 22.04's release kernel (5.15.0-25, kept in the archive's pool for good):
/// pinned by URL and SHA-256, downloaded with curl and unpacked once. Its image has the
/// 8250 serial console and gzip initramfs support built in: no modules needed.
const UBUNTU_5_15: &str = "linux-image-unsigned-5.15.0-25-generic_5.15.0-25.25_amd64.deb";
const UBUNTU_5_15_SHA256: &str = "ac69df20790c48217eb1386ef81fd10d3f20a4ede4dab81cc107c65d29549fa0";

fn ubuntu_5_15() -> PathBuf {
    let dir = matrix_dir();
    let root = dir.join(UBUNTU_5_15.trim_end_matches(".deb"));
    if !root.join("boot").is_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        let deb = dir.join(UBUNTU_5_15);
        let url = format!("https://archive.ubuntu.com/ubuntu/pool/main/l/linux/{UBUNTU_5_15}");
        output(Command::new("curl").args(["-fsSL", "--retry", "3", "-o"]).arg(&deb).arg(&url));
        let sum = output(Command::new("sha256sum").arg(&deb));
        if sum.split_whitespace().next() != Some(UBUNTU_5_15_SHA256) {
            std::fs::remove_file(&deb).unwrap();
            panic!("{url}: SHA-256 {sum} is not the pinned {UBUNTU_5_15_SHA256}");
        }
        unpack(&deb, &root);
    }
    vmlinuz(&root)
}

/// Unpack a kernel .deb into `root` (via a partial folder, so a half-unpacked one is
/// never taken for a done one), then delete the .deb.
fn unpack(deb: &Path, root: &Path) {
    let partial = PathBuf::from(format!("{}.partial", root.display()));
    let _ = std::fs::remove_dir_all(&partial);
    output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial));
    std::fs::rename(&partial, root).unwrap();
    std::fs::remove_file(deb).unwrap();
}

/// The kernel image of an unpacked package.
fn vmlinuz(root: &Path) -> PathBuf {
    std::fs::read_dir(root.join("boot"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-"))
        .expect("vmlinuz in the kernel package")
}

/// The shared libraries `exe` loads (ldd), the dynamic loader included.
fn libraries(exe: &Path) -> Vec<PathBuf> {
    let text = output(Command::new("ldd").arg(exe));
    text.split_whitespace().filter(|w| w.starts_with('/')).map(PathBuf::from).collect()
}

/// Copy `from` to `to` inside the image root, with its parent folders.
fn install(root: &Path, from: &Path, to: &str) {
    let dest = root.join(to.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("copy {} into the initramfs: {e}", from.display()));
}

/// An initramfs (cpio newc + gzip) under target/kernel-matrix: busybox, /init, the
/// plan, the tool and the mariadb CLI with their libraries.
fn initramfs(bin: &Path, name: &str, plan: &str) -> PathBuf {
    let image = matrix_dir().join(format!("{name}.cpio.gz"));
    let root = matrix_dir().join(format!("{name}.root"));
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel_matrix/init");
    if up_to_date(&image, &root.join("plan"), plan, &[bin, &init]) {
        return image;
    }
    let _ = std::fs::remove_dir_all(&root);
    for d in ["proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    install(&root, Path::new("/bin/busybox"), "/bin/busybox");
    install(&root, &init, "/init");
    std::fs::write(root.join("plan"), plan).unwrap();
    let cli = Path::new("/usr/bin/mariadb");
    install(&root, bin, "/bin/handshake-trace");
    install(&root, cli, "/usr/bin/mariadb");
    for lib in libraries(bin).into_iter().chain(libraries(cli)) {
        install(&root, &lib, lib.to_str().unwrap());
    }
    // Written aside and renamed: a half-written image is never taken for a built one.
    let pack = format!("cd '{0}' && find . | cpio -o -H newc --quiet | gzip -1 > '{1}.part' && mv '{1}.part' '{1}'", root.display(), image.display());
    output(Command::new("sh").args(["-c", &pack]));
    image
}

/// Is the image there, with the same plan, and newer than each of its inputs?
fn up_to_date(image: &Path, old_plan: &Path, plan: &str, inputs: &[&Path]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(image) else { return false };
    std::fs::read_to_string(old_plan).is_ok_and(|p| p == plan) && inputs.iter().all(|i| modified(i).is_some_and(|t| t < built))
}

/// Boot the kernel with `initrd` and the extra command line; the serial console's text.
/// Killed (and the test failed) after VM_TIMEOUT.
fn boot(kernel: &Path, initrd: &Path, append: &str) -> String {
    let mut vm = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("console=ttyS0 panic=-1 quiet loglevel=1 {append}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64 (package qemu-system-x86)");
    let mut stdout = vm.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let start = Instant::now();
    while vm.try_wait().unwrap().is_none() {
        if start.elapsed() > VM_TIMEOUT {
            let _ = vm.kill();
            let _ = vm.wait();
            panic!("the VM did not power off within {VM_TIMEOUT:?}; serial console:\n{}", reader.join().unwrap());
        }
        thread::sleep(Duration::from_millis(500));
    }
    let text = reader.join().unwrap();
    eprintln!("kernel-matrix VM ({}, {append:?}) ran {:.0} s", kernel.display(), start.elapsed().as_secs_f64());
    text
}

/// What /init printed: per tag ("doctor", "lab socket normal"), its output lines and
/// its exit status.
#[derive(Default)]
struct Serial {
    out: BTreeMap<String, Vec<String>>,
    err: BTreeMap<String, Vec<String>>,
    rc: BTreeMap<String, i32>,
    text: String,
}

impl Serial {
    fn parse(text: String) -> Serial {
        let mut s = Serial::default();
        for line in text.lines() {
            let Some(at) = line.find("@@KM ") else { continue };
            let marker = line[at + 5..].trim_end_matches('\r');
            let stream = [(" out: ", &mut s.out), (" err: ", &mut s.err)].into_iter().find_map(|(sep, map)| Some((marker.split_once(sep)?, map)));
            if let Some(((tag, rest), map)) = stream {
                map.entry(tag.to_string()).or_default().push(rest.to_string());
            } else if let Some((tag, rc)) = marker.rsplit_once(" rc=") {
                s.rc.insert(tag.to_string(), rc.parse().unwrap_or(-1));
            }
        }
        s.text = text;
        s
    }

    /// The lines of `tag` on `stream`, after asserting it ran and exited 0.
    fn succeeded(&self, tag: &str) -> (&[String], &[String]) {
        let (out, err) = (self.out.get(tag).map(Vec::as_slice).unwrap_or_default(), self.err.get(tag).map(Vec::as_slice).unwrap_or_default());
        assert_eq!(self.rc.get(tag), Some(&0), "{tag} did not succeed in the VM:\n{}\n{}\nserial console:\n{}", out.join("\n"), err.join("\n"), self.text);
        (out, err)
    }

    /// A lab run's handshakes (JSON lines).
    fn handshakes(&self, tag: &str) -> Vec<Value> {
        let (out, _) = self.succeeded(tag);
        out.iter().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{tag}: not JSON ({e}): {l}"))).collect()
    }

    /// The verdicts of a lab run's handshakes, sorted.
    fn verdicts(&self, tag: &str) -> Vec<String> {
        let mut v: Vec<String> = self.handshakes(tag).iter().map(|h| h["verdict"].as_str().unwrap_or("?").to_string()).collect();
        v.sort();
        v
    }
}

fn plan(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn expected(scenario: &str) -> Vec<String> {
    let mut v: Vec<String> = lab_verdicts(scenario).iter().map(|s| s.to_string()).collect();
    assert!(!v.is_empty(), "no expected verdicts for {scenario} (lab_verdicts)");
    v.sort();
    v
}

#[test]
fn debian_6_1_socket_tier_uses_fexit_and_both_tiers_judge_every_lab_scenario_alike() {
    let Some(bin) = ready("debian_6_1_socket_tier_uses_fexit_and_both_tiers_judge_every_lab_scenario_alike") else { return };
    fexit_matrix(&bin, &debian_6_1(), "6.1.", "none", SCENARIOS);
}

/// Ubuntu 22.04's release kernel (5.15: an older verifier, no
/// bpf_get_current_pid_tgid in cgroup_skb), booted with `lockdown=integrity` as Ubuntu
/// does under UEFI Secure Boot: the socket tier's programs verify and attach there as on
/// 6.1, and lockdown's integrity mode does not refuse fexit.
#[test]
fn ubuntu_5_15_socket_tier_uses_fexit_and_both_tiers_judge_every_lab_scenario_alike() {
    let Some(bin) = ready("ubuntu_5_15_socket_tier_uses_fexit_and_both_tiers_judge_every_lab_scenario_alike") else { return };
    fexit_matrix(&bin, &ubuntu_5_15(), "5.15.", "integrity", SCENARIOS);
}

/// Under `lockdown=confidentiality` the kernel withholds tracefs (its files are not
/// created): neither tier can trace. `doctor` and a lab run must fail saying so, not
/// with a mount error.
#[test]
fn ubuntu_5_15_under_confidentiality_lockdown_doctor_and_the_tools_say_tracefs_is_withheld() {
    let Some(bin) = ready("ubuntu_5_15_under_confidentiality_lockdown_doctor_and_the_tools_say_tracefs_is_withheld") else { return };
    let lines = ["doctor".to_string(), "lab syscalls normal".to_string()];
    let serial = Serial::parse(boot(&ubuntu_5_15(), &initramfs(&bin, "confidentiality", &plan(&lines)), "lockdown=confidentiality"));
    let boot_line = serial.out.get("boot").map(|l| l.join(" ")).unwrap_or_default();
    assert!(boot_line.starts_with("5.15.") && boot_line.contains("[confidentiality]"), "{boot_line}\n{}", serial.text);
    let withheld = "kernel lockdown \"confidentiality\" withholds tracefs";
    let doctor = serial.out.get("doctor").cloned().unwrap_or_default().join("\n");
    assert!(serial.rc.get("doctor").is_some_and(|rc| *rc != 0), "{doctor}");
    assert!(doctor.contains(&format!("[FAIL] tracefs: not usable: {withheld} (no tracepoints for any capture tier) — fix: boot without lockdown=confidentiality")), "{doctor}");
    let lab = serial.err.get("lab syscalls normal").cloned().unwrap_or_default().join("\n");
    assert!(serial.rc.get("lab syscalls normal").is_some_and(|rc| *rc != 0), "{lab}");
    assert!(lab.contains(&format!("{withheld} (no tracepoints for any capture tier); boot without lockdown=confidentiality")) && !lab.contains("mount"), "{lab}");
}

/// Boot `kernel` (its release starting with `release`) in `lockdown` mode with the lab plan:
/// `doctor` must say the tp_btf hooks are missing and the socket tier uses fexit, and
/// each scenario must get its expected verdicts in both tiers, the socket tier without
/// falling back.
fn fexit_matrix(bin: &Path, kernel: &Path, release: &str, lockdown: &str, scenarios: &[&str]) {
    let mut lines = vec!["doctor".to_string()];
    lines.extend(scenarios.iter().flat_map(|s| TIERS.map(|t| format!("lab {t} {s}"))));
    let append = if lockdown == "none" { String::new() } else { format!("lockdown={lockdown}") };
    let serial = Serial::parse(boot(kernel, &initramfs(bin, &format!("fexit-{}", release.trim_end_matches('.')), &plan(&lines)), &append));
    let boot_line = serial.out.get("boot").map(|l| l.join(" ")).unwrap_or_default();
    assert!(boot_line.starts_with(release) && boot_line.contains(&format!("[{lockdown}]")), "not {release}x in lockdown {lockdown}: {boot_line}\n{}", serial.text);
    // The functions the fexit programs attach to exist (not inlined) on this kernel.
    let syms = serial.out.get("kallsyms").cloned().unwrap_or_default();
    assert!(syms.contains(&"sock_recvmsg".into()) && syms.contains(&"sock_sendmsg".into()), "{syms:?}");

    let (doctor, _) = serial.succeeded("doctor");
    let doctor = doctor.join("\n");
    eprintln!("doctor on {release}x:\n{doctor}");
    assert!(doctor.contains("tp_btf socket hooks: missing: sock_recv_length, sock_send_length"), "{doctor}");
    assert!(doctor.contains("socket capture tier (--capture socket): socket (fexit)"), "{doctor}");
    assert!(doctor.contains("fexit sock_recvmsg, fexit sock_sendmsg; tp_btf inet_sock_set_state;"), "{doctor}");
    assert!(doctor.contains("this kernel supports: syscalls, socket (fexit)"), "{doctor}");

    for &scenario in scenarios {
        let by_tier: Vec<Vec<String>> = TIERS.iter().map(|t| serial.verdicts(&format!("lab {t} {scenario}"))).collect();
        for (tier, verdicts) in TIERS.iter().zip(&by_tier) {
            assert_eq!(verdicts, &expected(scenario), "{scenario} in the {tier} tier on {release}x");
        }
        assert_eq!(by_tier[0], by_tier[1], "{scenario}: the tiers disagree on {release}x");
        // The socket tier really ran (no fallback): its notice, not the fallback's.
        let (_, err) = serial.succeeded(&format!("lab socket {scenario}"));
        assert!(err.iter().any(|l| l.contains("socket capture tier: nothing on the syscall path")), "{err:#?}");
        assert!(!err.iter().any(|l| l.contains("is not available on this kernel")), "{err:#?}");
    }
    // The servers' empty reads (EAGAIN, ERESTARTSYS) reach the timelines only through
    // the fexit programs on this kernel.
    for h in serial.handshakes("lab socket connect-timeout") {
        assert!(h["events"].as_array().unwrap().iter().any(|e| e["syscall"] == "sock_recv"), "no fexit read in {h:#}");
    }
}

/// `HANDSHAKE_TRACE_SOCKET_HOOKS=fexit` makes this host's socket tier skip its tp_btf
/// hooks, as on a kernel before 6.3. This host refuses fexit (EPERM), so the tier must
/// fall back to the syscall tier, say so in one line and in `doctor`, and still judge
/// right; on a host that loads fexit it must use it instead.
#[test]
fn without_the_tp_btf_hooks_this_host_uses_fexit_or_falls_back_and_says_which() {
    let Some(bin) = ready("without_the_tp_btf_hooks_this_host_uses_fexit_or_falls_back_and_says_which") else { return };
    let forced = |args: &[&str]| {
        let out = Command::new(&bin).args(args).env("HANDSHAKE_TRACE_SOCKET_HOOKS", "fexit").output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (_, doctor, _) = forced(&["doctor"]);
    let tier = doctor.lines().find(|l| l.contains("socket capture tier (--capture socket)")).unwrap_or_else(|| panic!("{doctor}")).to_string();
    let scenario = "timeout-poll";
    let (ok, out, err) = forced(&["lab", scenario, "--capture", "socket", "-j"]);
    assert!(ok, "{err}");
    let mut verdicts: Vec<String> =
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["verdict"].as_str().unwrap_or("?").to_string()).collect();
    verdicts.sort();
    assert_eq!(verdicts, expected(scenario), "{out}\n{err}");
    let notices: Vec<&str> = err.lines().filter(|l| l.contains("--capture socket is not available on this kernel")).collect();
    let socket_ran = err.contains("socket capture tier: nothing on the syscall path");
    if tier.contains("not available: falls back to syscalls") {
        eprintln!("this host refuses fexit: {tier}");
        assert!(tier.contains("fexit/sock_recvmsg") && tier.contains("refused"), "{tier}");
        assert!(doctor.contains("this kernel supports: syscalls (socket: not available, falls back to syscalls)"), "{doctor}");
        assert_eq!(notices.len(), 1, "one fallback line: {err}");
        assert!(notices[0].contains("fexit on sock_recvmsg/sock_sendmsg") && notices[0].ends_with("tracing with the syscall tier instead"), "{}", notices[0]);
        assert!(!socket_ran, "{err}");
    } else {
        eprintln!("this host loads fexit: {tier}");
        assert!(tier.contains("socket (fexit)"), "{tier}");
        assert!(notices.is_empty() && socket_ran, "{err}");
    }
}

/// `HANDSHAKE_TRACE_SET_STATE=tracepoint` makes the socket tier's state-change program
/// the classic `sock:inet_sock_set_state` (the fallback where the BTF tracepoint
/// cannot load): `doctor` names it and why, and the verdicts are the same.
#[test]
fn the_classic_set_state_fallback_judges_alike_and_doctor_names_it() {
    let Some(bin) = ready("the_classic_set_state_fallback_judges_alike_and_doctor_names_it") else { return };
    let run = |args: &[&str], classic: bool| {
        let mut cmd = Command::new(&bin);
        if classic {
            cmd.env("HANDSHAKE_TRACE_SET_STATE", "tracepoint");
        }
        let out = cmd.args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (_, doctor, _) = run(&["doctor"], true);
    assert!(doctor.contains("; tracepoint sock:inet_sock_set_state;"), "{doctor}");
    assert!(doctor.contains("socket tier state changes: inet_sock_set_state: the BTF tracepoint is not available (HANDSHAKE_TRACE_SET_STATE=tracepoint)"), "{doctor}");
    let (_, doctor, _) = run(&["doctor"], false);
    assert!(doctor.contains("; tp_btf inet_sock_set_state;") && !doctor.contains("socket tier state changes"), "{doctor}");
    // A poll server's abortive close (ESTABLISHED → CLOSE) and an alarm server's FIN.
    let scenario = "connect-timeout";
    for classic in [true, false] {
        let (ok, out, err) = run(&["lab", scenario, "--capture", "socket", "-j"], classic);
        assert!(ok, "{err}");
        let mut verdicts: Vec<String> =
            out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["verdict"].as_str().unwrap_or("?").to_string()).collect();
        verdicts.sort();
        assert_eq!(verdicts, expected(scenario), "classic {classic}: {out}\n{err}");
        assert!(err.contains("socket capture tier: nothing on the syscall path"), "{err}");
    }
}
