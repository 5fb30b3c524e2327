//! The `peerfs` command.

mod cli;

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    cli::main()
}

/// Blocks are megabyte buffers allocated and freed in a loop. By default glibc hands each
/// one back to the kernel and the next one page-faults in fresh zeroed pages, which cost
/// more than hashing them. Keeping freed memory in the heap for reuse avoids that.
fn keep_freed_memory() {
    const KEEP: libc::c_int = 256 << 20;
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
    }
}
