#[path = "../../../fuzz/checks.rs"]
mod checks;
use arbitrary::{Arbitrary, Unstructured};
use tenax_protocol::seed::*;
#[test]
fn dump() {
    let mut v: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/seed_decide")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    for p in v {
        let d = std::fs::read(&p).unwrap();
        let i = checks::SeedInput::arbitrary_take_rest(Unstructured::new(&d)).unwrap();
        let (r, l) = i.headers();
        let req = SeedRequest::classify(r.as_deref(), l.as_deref());
        let act = req.map(|q| decide(i.state(), q));
        println!("{:20} {:?} {:?} {:?} => {:?}", p.file_name().unwrap().to_str().unwrap(), i.state(), r, l, act);
    }
}
