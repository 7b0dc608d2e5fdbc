//! Process memory, for logs and benchmarks.

/// Peak resident set size of this process in bytes (`VmHWM` of `/proc/self/status`; `None`
/// where that file does not exist, e.g. outside Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_positive_on_linux() {
        if std::path::Path::new("/proc/self/status").exists() {
            let b = super::peak_rss_bytes().expect("VmHWM");
            assert!(b > 1 << 20, "{b}");
        }
    }
}
