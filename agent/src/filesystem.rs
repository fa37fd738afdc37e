//! `node_filesystem_*` as node-exporter reports them: the mounts of `/proc/1/mounts` (the host's, when the
//! agent runs in a container with the host's /proc under its root) minus node-exporter's default ignored
//! mount points and filesystem types, sized with `statvfs` on the mount point under the root.

use std::path::Path;

use crate::Point;

/// Mount points node-exporter ignores by default (its 1.5 defaults, as Debian ships it and the tests
/// compare against): these trees, and anything under Docker's and Podman's storage.
const IGNORED_MOUNT_PREFIXES: [&str; 6] = ["/dev", "/proc", "/run", "/sys", "/mnt", "/media"];
const IGNORED_MOUNT_UNDER: [&str; 2] = ["/var/lib/docker/", "/var/lib/containers/storage/"];

/// Filesystem types node-exporter ignores by default.
const IGNORED_TYPES: [&str; 24] = [
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

fn ignored_mount(mountpoint: &str) -> bool {
    let prefixed = IGNORED_MOUNT_PREFIXES.iter().any(|p| mountpoint == *p || mountpoint.starts_with(&format!("{p}/")));
    prefixed || IGNORED_MOUNT_UNDER.iter().any(|p| mountpoint.starts_with(p))
}

/// `/proc/mounts` escapes spaces and tabs in paths as octal (`\040`).
fn unescape(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Size counters of one mounted filesystem.
struct Sizes {
    size: f64,
    free: f64,
    avail: f64,
    files: f64,
    files_free: f64,
}

fn statvfs(path: &Path) -> Option<Sizes> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` points to writable memory of the right
    // type; statvfs fills it completely when it returns 0.
    let stats = unsafe {
        if libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    let fragment = stats.f_frsize as f64;
    Some(Sizes {
        size: stats.f_blocks as f64 * fragment,
        free: stats.f_bfree as f64 * fragment,
        avail: stats.f_bavail as f64 * fragment,
        files: stats.f_files as f64,
        files_free: stats.f_ffree as f64,
    })
}

/// Points for every reported filesystem; none when the root has no mount table (fixtures).
pub fn collect(root: &Path) -> Vec<Point> {
    let text = std::fs::read_to_string(root.join("proc/1/mounts"))
        .or_else(|_| std::fs::read_to_string(root.join("proc/mounts")))
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut points = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, mountpoint, fstype, options, ..] = fields[..] else { continue };
        let (device, mountpoint) = (unescape(device), unescape(mountpoint));
        if ignored_mount(&mountpoint) || IGNORED_TYPES.contains(&fstype) || !seen.insert(mountpoint.clone()) {
            continue;
        }
        let Some(sizes) = statvfs(&root.join(mountpoint.trim_start_matches('/'))) else { continue };
        let readonly = if options.split(',').any(|o| o == "ro") { 1.0 } else { 0.0 };
        let labels = [("device", device.as_str()), ("fstype", fstype), ("mountpoint", mountpoint.as_str())];
        for (name, value) in [
            ("node_filesystem_size_bytes", sizes.size),
            ("node_filesystem_free_bytes", sizes.free),
            ("node_filesystem_avail_bytes", sizes.avail),
            ("node_filesystem_files", sizes.files),
            ("node_filesystem_files_free", sizes.files_free),
            ("node_filesystem_readonly", readonly),
            ("node_filesystem_device_error", 0.0),
        ] {
            points.push(Point::new(name, &labels, value));
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_filtered_as_node_exporter_does_and_sized_by_statvfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/1")).unwrap();
        std::fs::create_dir_all(dir.path().join("data dir")).unwrap();
        let mounts = "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw,relatime 0 0\n/dev/sdb1 /data\\040dir xfs ro 0 0\n\
                      overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\ntmpfs /run tmpfs rw 0 0\n\
                      /dev/sdc1 /srv/missing ext4 rw 0 0\n";
        std::fs::write(dir.path().join("proc/1/mounts"), mounts).unwrap();
        let points = collect(dir.path());
        let mountpoints: std::collections::BTreeSet<&str> = points
            .iter()
            .flat_map(|p| p.labels.iter().filter(|(k, _)| k == "mountpoint").map(|(_, v)| v.as_str()))
            .collect();
        // `/srv/missing` does not exist under the root: statvfs fails and it is skipped.
        assert_eq!(mountpoints.into_iter().collect::<Vec<_>>(), ["/", "/data dir"]);
        let value = |name: &str, mountpoint: &str| {
            points
                .iter()
                .find(|p| p.name == name && p.labels.iter().any(|(k, v)| k == "mountpoint" && v == mountpoint))
                .unwrap()
                .value
        };
        assert!(value("node_filesystem_size_bytes", "/") > 0.0);
        assert!(value("node_filesystem_avail_bytes", "/") <= value("node_filesystem_free_bytes", "/"));
        assert_eq!(value("node_filesystem_readonly", "/data dir"), 1.0);
        assert!(collect(&dir.path().join("nowhere")).is_empty());
    }
}
