//! Regenerates `geo-service/data/sample.mmdb`, the database the geo-service
//! embeds as `builtin:sample`. Run from the workspace root:
//! `cargo run -p bangui-testkit --bin make-sample-db`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../geo-service/data/sample.mmdb");
    std::fs::write(&path, bangui_testkit::sample_database())?;
    println!("wrote {}", path.display());
    Ok(())
}
