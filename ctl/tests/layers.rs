//! Layer apply, directly on the library: what a layer tar becomes on disk (overlay form),
//! and one test per layer-extraction CVE: nothing outside the layer's root is ever
//! touched, and the error names the layer and the entry. Runs as root (owners, devices,
//! trusted.* xattrs).

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use capsa_image::layer::{self, Limits};
use capsa_image::oci::Compression;
use capsa_image::Digest;
use support::*;

struct Case {
    env: Env,
    out: PathBuf,
    outside: PathBuf,
}

fn case(name: &str) -> Case {
    let env = Env::new(&format!("layer-{name}"));
    let out = env.dir.join("root");
    let outside = env.dir.join("outside");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host").unwrap();
    std::fs::set_permissions(outside.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    Case { env, out, outside }
}

impl Case {
    fn unpack_as(&self, tar: &[u8], comp: Compression, limits: &Limits) -> capsa_image::Result<layer::Unpacked> {
        let plain_digest = Digest::of(tar);
        let blob = match comp {
            Compression::None => tar.to_vec(),
            Compression::Gzip => gzip(tar),
            Compression::Zstd => zstd(tar),
        };
        let p = self.env.write("blob", &blob);
        let f = std::fs::File::open(p).unwrap();
        let digest = if comp == Compression::None { plain_digest } else { Digest::of(&blob) };
        layer::unpack(&f, &digest, comp, &self.out, limits)
    }

    fn unpack(&self, tar: &[u8]) -> capsa_image::Result<layer::Unpacked> {
        self.unpack_as(tar, Compression::None, &Limits::default())
    }

    /// The outside directory is as the test made it.
    fn outside_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")], "something was created outside the layer root");
        assert_eq!(std::fs::read_to_string(self.outside.join("secret")).unwrap(), "host");
        let m = std::fs::metadata(self.outside.join("secret")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600, "the outside file's mode changed");
        assert_eq!(m.nlink(), 1, "the outside file got a hard link");
        assert_eq!(m.uid(), 0);
    }

    /// `/../../..<outside>` as a symlink target that climbs out of the layer root.
    fn escape(&self) -> String {
        format!("/../../../../../..{}", self.outside.display())
    }
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: lgetxattr writes at most buf.len() bytes into buf.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

#[test]
fn entries_become_files_in_overlay_form() {
    let c = case("forms");
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/conf", 0o640, b"x=1\n")
        .owned("home/u/file", 0o4755, 1000, 1001, b"suid")
        .symlink("etc/link", "/etc/conf")
        .hardlink("etc/hard", "etc/conf")
        .chardev("dev/null", 1, 3)
        .fifo("run/fifo")
        .pax_file(
            "etc/attr",
            0o644,
            b"a",
            &[("SCHILY.xattr.user.color", b"blue"), ("SCHILY.xattr.trusted.overlay.redirect", b"/x"), ("mtime", b"1234.5")],
        )
        .whiteout("etc/gone")
        .opaque("var")
        .tar();
    let u = c.unpack(&tar).unwrap();
    assert_eq!(u.diff_id, Digest::of(&tar));
    assert_eq!(u.size, 4 + 4 + 1);
    let o = &c.out;
    assert_eq!(std::fs::read_to_string(o.join("etc/conf")).unwrap(), "x=1\n");
    let m = std::fs::metadata(o.join("home/u/file")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 1000, 1001), "owner and set-uid mode kept");
    assert_eq!(std::fs::metadata(o.join("etc/conf")).unwrap().mtime(), 1_700_000_000);
    assert_eq!(std::fs::read_link(o.join("etc/link")).unwrap(), PathBuf::from("/etc/conf"));
    assert_eq!(std::fs::metadata(o.join("etc/hard")).unwrap().ino(), std::fs::metadata(o.join("etc/conf")).unwrap().ino());
    let dev = std::fs::symlink_metadata(o.join("dev/null")).unwrap();
    assert!(dev.file_type().is_char_device() && dev.rdev() == libc::makedev(1, 3));
    assert!(std::fs::symlink_metadata(o.join("run/fifo")).unwrap().file_type().is_fifo());
    assert_eq!(xattr(&o.join("etc/attr"), "user.color").as_deref(), Some(&b"blue"[..]));
    assert_eq!(xattr(&o.join("etc/attr"), "trusted.overlay.redirect"), None, "overlay xattrs from a layer are dropped");
    assert_eq!(std::fs::metadata(o.join("etc/attr")).unwrap().mtime(), 1234);
    let wh = std::fs::symlink_metadata(o.join("etc/gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "a whiteout is a 0:0 char device");
    assert!(!o.join("etc/.wh.gone").exists());
    assert_eq!(xattr(&o.join("var"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!o.join("var/.wh..wh..opq").exists());
    c.outside_untouched();
}

#[test]
fn gzip_and_zstd_give_the_same_tree_and_diff_id() {
    let tar = Layer::new().file("a/b", 0o644, &vec![7u8; 100_000]).symlink("l", "a/b").tar();
    for comp in [Compression::Gzip, Compression::Zstd] {
        let c = case(&format!("comp-{comp:?}"));
        let u = c.unpack_as(&tar, comp, &Limits::default()).unwrap();
        assert_eq!(u.diff_id, Digest::of(&tar), "{comp:?}");
        assert_eq!(std::fs::read(c.out.join("a/b")).unwrap(), vec![7u8; 100_000]);
    }
}

#[test]
fn cve_2014_9356_symlink_breakout_stays_inside() {
    // A symlink pointing outside, then files written "through" it.
    let c = case("9356");
    let tar = Layer::new().symlink("evil", &c.escape()).file("evil/pwned", 0o644, b"x").file("evil/secret", 0o777, b"overwritten").tar();
    c.unpack(&tar).unwrap();
    c.outside_untouched();
    // The names resolved inside the root: the files landed under the root.
    let inside = c.out.join(c.outside.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(inside.join("pwned")).unwrap(), "x");
    // An absolute symlink to /etc, then a write through it: the layer's own etc.
    let c = case("9356-abs");
    let tar = Layer::new().dir("etc/", 0o755).symlink("e", "/etc").file("e/capsa-test-pwned", 0o644, b"x").tar();
    c.unpack(&tar).unwrap();
    assert!(!Path::new("/etc/capsa-test-pwned").exists());
    assert_eq!(std::fs::read_to_string(c.out.join("etc/capsa-test-pwned")).unwrap(), "x");
    // A symlink to itself once inside the root: an error naming the entry, not the host's /etc.
    let c = case("9356-loop");
    let tar = Layer::new().symlink("etc", "/etc").file("etc/capsa-test-pwned", 0o644, b"x").tar();
    let e = c.unpack(&tar).unwrap_err().to_string();
    assert!(e.contains("entry \"etc/capsa-test-pwned\""), "{e}");
    assert!(!Path::new("/etc/capsa-test-pwned").exists());
}

#[test]
fn cve_2014_6407_hardlink_breakout_is_refused() {
    let c = case("6407");
    let e = c.unpack(&Layer::new().hardlink("h", "../../outside/secret").tar()).unwrap_err().to_string();
    assert!(e.contains("entry \"h\"") && e.contains("escapes the layer root"), "{e}");
    c.outside_untouched();
    // Through a symlink: the link target is looked up inside the root, where it is not.
    let c = case("6407-sym");
    let tar = Layer::new().symlink("s", &c.escape()).hardlink("h", "s/secret").tar();
    let e = c.unpack(&tar).unwrap_err().to_string();
    assert!(e.contains("entry \"h\""), "{e}");
    c.outside_untouched();
    // A file name that climbs out.
    let c = case("6407-dotdot");
    let e = c.unpack(&Layer::new().file("../../outside/new", 0o644, b"x").tar()).unwrap_err().to_string();
    assert!(e.contains("escapes the layer root"), "{e}");
    c.outside_untouched();
}

#[test]
fn cve_2021_32760_no_chmod_outside_the_root() {
    // containerd chmod'ed a symlink's target; here an entry over a symlink replaces the
    // symlink itself and modes only ever go to files opened by fd.
    let c = case("32760");
    let secret = c.outside.join("secret");
    let tar = Layer::new()
        .symlink("link", secret.to_str().unwrap())
        .file("link", 0o777, b"replaced")
        .symlink("dlink", c.outside.to_str().unwrap())
        .dir("dlink/", 0o777)
        .symlink("l2", secret.to_str().unwrap())
        .hardlink("l3", "l2")
        .tar();
    c.unpack(&tar).unwrap();
    c.outside_untouched();
    assert_eq!(std::fs::read_to_string(c.out.join("link")).unwrap(), "replaced");
    assert!(c.out.join("dlink").is_dir() && !c.out.join("dlink").is_symlink());
    // l3 is a hard link to the symlink l2, not to what it points at.
    assert!(std::fs::symlink_metadata(c.out.join("l3")).unwrap().file_type().is_symlink());
}

#[test]
fn truncated_and_corrupt_tars_name_the_entry() {
    let c = case("trunc");
    let tar = Layer::new().file("first", 0o644, b"ok").file("big", 0o644, &vec![1u8; 50_000]).tar();
    let e = c.unpack(&tar[..20_000]).unwrap_err().to_string();
    assert!(e.contains("\"big\"") && e.contains("truncated"), "{e}");
    let c = case("corrupt");
    let mut bad = tar.clone();
    bad[1024 + 148] ^= 0x55; // the second header's checksum
    let e = c.unpack(&bad).unwrap_err().to_string();
    assert!(e.contains("after entry \"first\""), "{e}");
    // gzip cut short.
    let c = case("trunc-gz");
    let gz = gzip(&tar);
    let p = c.env.write("blob.gz", &gz[..gz.len() / 2]);
    let e = layer::unpack(&std::fs::File::open(p).unwrap(), &Digest::of(&gz), Compression::Gzip, &c.out, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("entry \"") && e.to_string().contains("deflate"), "{e}");
}

#[test]
fn decompression_bomb_is_stopped() {
    let c = case("bomb");
    // 64 MiB of zeros gzip to ~64 KiB (1000x): refused once past the limit.
    let tar = Layer::new().file("zeros", 0o644, &vec![0u8; 64 << 20]).tar();
    let limits = Limits { max_bytes: 1 << 40, max_ratio: 200, ratio_after: 16 << 20 };
    let e = c.unpack_as(&tar, Compression::Gzip, &limits).unwrap_err().to_string();
    assert!(e.contains("decompression bomb") && e.contains("layer sha256:"), "{e}");
    let c = case("bomb-cap");
    let limits = Limits { max_bytes: 8 << 20, max_ratio: 200, ratio_after: 1 << 40 };
    let e = c.unpack_as(&tar, Compression::Zstd, &limits).unwrap_err().to_string();
    assert!(e.contains("CAPSA_MAX_LAYER_BYTES"), "{e}");
}
