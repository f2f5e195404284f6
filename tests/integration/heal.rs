//! Self-healing: a real service whose health check fails is restarted after N cycles; one
//! that keeps failing gets M restarts, then a critical "gave up"; none while a backup,
//! restore or maintenance run holds its lock.

use std::fs;
use std::time::Duration;

use crate::common::{Env, stdout, test_service, wait_for};
use crate::mail::free_port;

fn row(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in\n{out}"))
        .to_string()
}

fn up(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn a_failing_service_is_restarted_then_given_up_on_and_never_during_a_backup() {
    let env = Env::new();
    let port = free_port();
    let pidfile = env.root.join("web.pid");
    let cmds = test_service(&env.root, "web", &pidfile, &format!("--port {port}"));
    let dead = free_port();
    env.write_config(&format!(
        "[[service]]\nname = \"web\"\nmanager = \"command\"\nstart = {:?}\n\
         stop = \"kill $(cat '{pid}') 2>/dev/null; rm -f '{pid}'; true\"\nstatus = {:?}\n\
         health-url = \"http://127.0.0.1:{port}/health\"\nrestart-after = 2\nmax-restarts = 2\n\
         restart-window = \"1h\"\nstart-timeout = \"20s\"\n\n\
         [[service]]\nname = \"broken\"\nmanager = \"command\"\nstart = \"true\"\nstop = \"true\"\n\
         status = \"false\"\nhealth-url = \"http://127.0.0.1:{dead}/\"\nrestart-after = 1\n\
         max-restarts = 2\nstart-timeout = \"1s\"\nstop-timeout = \"1s\"\n",
        cmds.start,
        cmds.status,
        pid = pidfile.display(),
    ));
    assert!(
        std::process::Command::new("sh")
            .args(["-c", &cmds.start])
            .status()
            .unwrap()
            .success()
    );
    wait_for("web", Duration::from_secs(20), || up(port));
    let check = || stdout(&env.cmd().arg("check").assert());
    let out = check();
    assert!(row(&out, "restart web").contains("healthy"), "{out}");
    // The one that cannot come back: a restart each cycle (restart-after 1), two in all,
    // then a critical give-up.
    let first = row(&out, "restart broken");
    assert!(first.contains("restart failed"), "{first}");
    // The service crashes.
    let pid = fs::read_to_string(&pidfile).unwrap();
    // SAFETY: killing the test's own service.
    unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
    wait_for("web down", Duration::from_secs(20), || !up(port));
    let out = check();
    assert!(
        row(&out, "restart web").contains("1 of 2 failed checks"),
        "{out}"
    );
    let second = row(&out, "restart broken");
    assert!(second.contains("restart failed"), "{second}");
    let out = check();
    let line = row(&out, "restart web");
    assert!(
        line.contains("WARNING") && line.contains("restarted web after 2 failed health checks"),
        "{out}"
    );
    let third = row(&out, "restart broken");
    assert!(
        third.contains("CRITICAL") && third.contains("gave up"),
        "{third}"
    );
    assert!(up(port), "web is back");
    let out = check();
    assert!(row(&out, "restart web").contains("healthy"), "{out}");
    // While a backup holds its lock, nothing is restarted.
    let locks = env.state.join("locks");
    fs::create_dir_all(&locks).unwrap();
    let held = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(locks.join("backup.lock"))
        .unwrap();
    held.lock().unwrap();
    let pid = fs::read_to_string(&pidfile).unwrap();
    // SAFETY: killing the test's own service.
    unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
    wait_for("web down", Duration::from_secs(20), || !up(port));
    check();
    let out = check();
    assert!(
        row(&out, "restart web").contains("not restarted: a backup run"),
        "{out}"
    );
    assert!(!up(port));
    drop(held);
}
