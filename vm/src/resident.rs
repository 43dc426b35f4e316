//! Test support: which pages of a range are resident.

/// How many of the pages that `[start, start + len)` touches are resident (`mincore`).
pub(crate) fn resident_pages(start: usize, len: usize) -> usize {
    let page = 4096;
    let first = start / page * page;
    let end = (start + len).next_multiple_of(page);
    let mut map = vec![0u8; (end - first) / page];
    // SAFETY: `mincore` only reads the page tables of the range and writes one byte per page
    // into `map`, which has that many; the callers pass ranges of their own mappings.
    let result =
        unsafe { libc::mincore(first as *mut libc::c_void, end - first, map.as_mut_ptr()) };
    assert_eq!(result, 0, "mincore: {}", std::io::Error::last_os_error());
    map.iter().filter(|&&flags| flags & 1 != 0).count()
}
