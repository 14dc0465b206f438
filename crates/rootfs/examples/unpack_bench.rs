//! Unpack benchmark (run by `bench/unpack.sh`, in release; not part of the test run).
//!
//! `unpack_bench <layer.tar[.gz]> <dest>`: creates the empty directory `dest`, applies the layer
//! to it with [`kiln_rootfs::unpack_layer`] (default options: OCI whiteouts, limits, diffID
//! computed) and prints `seconds entries bytes` on one line. The time covers opening the layer
//! and the whole unpack, as `tar -xzf` would be timed; the directory is created before the clock
//! starts, as the script does for tar.

use kiln_rootfs::{unpack_layer, Root, UnpackOptions};
use std::fs::File;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, layer, dest] = args.as_slice() else {
        eprintln!("usage: unpack_bench <layer.tar[.gz]> <dest>");
        return ExitCode::from(2);
    };
    if let Err(e) = std::fs::create_dir(dest) {
        eprintln!("unpack_bench: create {dest}: {e}");
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    let root = match Root::open(dest) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("unpack_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = match File::open(layer) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("unpack_bench: open {layer}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match unpack_layer(&root, file, &UnpackOptions::default()) {
        Ok(stats) => {
            println!(
                "{:.4} {} {}",
                start.elapsed().as_secs_f64(),
                stats.entries,
                stats.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unpack_bench: {layer}: {e}");
            ExitCode::FAILURE
        }
    }
}
