//! Two network namespaces joined by a veth pair: a server host and a
//! client host on one machine, for what only a real network shows (a peer
//! that vanishes). Needs root; removed again when dropped.

use super::run_cmd;
use std::process::Command;

/// `ip netns` pair: `server` holds `server_ip`, `client` holds `client_ip`.
pub struct Hosts {
    pub server: String,
    pub client: String,
    pub server_ip: String,
    pub client_ip: String,
    /// The client's end of the link (in `client`).
    pub client_link: String,
}

/// True when this process may create namespaces. Outside CI a test
/// without root skips; under CI (`CI` set, run as root) it must run.
pub fn available(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root (ip netns), and CI runs as root"
    );
    eprintln!("skipped {test}: needs root (ip netns)");
    false
}

fn ip(args: &[&str]) {
    let out = run_cmd({
        let mut c = Command::new("ip");
        c.args(args);
        c
    });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// Creates both namespaces and the link; `tag` makes the names unique
    /// among tests running at once.
    pub fn new(tag: u8) -> Hosts {
        Hosts::make(tag, true)
    }

    /// Only a server host: its link's other end stays in this process's
    /// namespace, with `client_ip`, so the test itself is the client, over
    /// a real 1500-byte-MTU link (loopback's 64 KiB segments make a slow
    /// reader's progress arrive in big, rare bursts).
    pub fn server_only(tag: u8) -> Hosts {
        Hosts::make(tag, false)
    }

    /// The server namespace and a veth pair; the client end goes into a
    /// namespace of its own if `client_host`, else stays in ours.
    fn make(tag: u8, client_host: bool) -> Hosts {
        let id = std::process::id() % 10_000;
        let net = format!("10.{}.{}", 100 + tag, id % 250);
        let h = Hosts {
            server: format!("rl-s{tag}-{id}"),
            client: if client_host {
                format!("rl-c{tag}-{id}")
            } else {
                String::new()
            },
            server_ip: format!("{net}.1"),
            client_ip: format!("{net}.2"),
            client_link: format!("vc{tag}-{id}"),
        };
        let server_link = format!("vs{tag}-{id}");
        let server_cidr = format!("{}/24", h.server_ip);
        let client_cidr = format!("{}/24", h.client_ip);
        ip(&["netns", "add", &h.server]);
        let pair = ["link", "add", &server_link, "type", "veth", "peer", "name"];
        ip(&[&pair[..], &[h.client_link.as_str()]].concat());
        ip(&["link", "set", &server_link, "netns", &h.server]);
        ip(&[
            "-n",
            &h.server,
            "addr",
            "add",
            &server_cidr,
            "dev",
            &server_link,
        ]);
        ip(&["-n", &h.server, "link", "set", "lo", "up"]);
        ip(&["-n", &h.server, "link", "set", &server_link, "up"]);
        // `ip -n NS ...` for the client host, plain `ip ...` for ours.
        let client = |args: &[&str]| {
            if client_host {
                ip(&[&["-n", h.client.as_str()][..], args].concat());
            } else {
                ip(args);
            }
        };
        if client_host {
            ip(&["netns", "add", &h.client]);
            ip(&["link", "set", &h.client_link, "netns", &h.client]);
            client(&["link", "set", "lo", "up"]);
        }
        client(&["addr", "add", &client_cidr, "dev", &h.client_link]);
        client(&["link", "set", &h.client_link, "up"]);
        h
    }

    /// A command run inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Takes the client's link down (`false`) or up again (`true`): while
    /// it is down, nothing reaches or leaves the client host.
    pub fn client_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.client, "link", "set", &self.client_link, state]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and so both.
        for ns in [&self.server, &self.client] {
            if !ns.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
}
