//! The baseline of bench/s3: uploads a file straight to S3 with the same
//! client library and multipart API tenax uses, no tenax in between.
//!
//! `s3_direct s3://BUCKET/KEY FILE PART_SIZE IN_FLIGHT` (endpoint and
//! credentials from the `AWS_*` environment); prints the seconds taken.

use std::sync::Arc;
use std::time::Instant;

use object_store::aws::AmazonS3Builder;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use tokio::io::AsyncReadExt as _;
use tokio::task::JoinSet;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, file, part_size, in_flight] = &args[..] else {
        return Err("usage: s3_direct s3://BUCKET/KEY FILE PART_SIZE IN_FLIGHT".into());
    };
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or("expected s3://BUCKET/KEY")?;
    let part_size: usize = part_size.parse()?;
    let in_flight: usize = in_flight.parse()?;
    let store = Arc::new(
        AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?,
    );
    let path = Path::parse(key)?;
    let started = Instant::now();
    let mut file = tokio::fs::File::open(file).await?;
    let id = store.create_multipart(&path).await?;
    let mut tasks = JoinSet::new();
    let mut parts = Vec::new();
    let mut index = 0;
    loop {
        let mut buffer = Vec::with_capacity(part_size);
        while buffer.len() < part_size {
            let read = (&mut file)
                .take((part_size - buffer.len()) as u64)
                .read_to_end(&mut buffer)
                .await?;
            if read == 0 {
                break;
            }
        }
        if buffer.is_empty() {
            break;
        }
        while tasks.len() >= in_flight {
            if let Some(done) = tasks.join_next().await {
                parts.push(done??);
            }
        }
        let (store, path, id) = (Arc::clone(&store), path.clone(), id.clone());
        let part = index;
        tasks.spawn(async move {
            let uploaded = store.put_part(&path, &id, part, buffer.into()).await?;
            Ok::<_, object_store::Error>((part, uploaded))
        });
        index += 1;
    }
    while let Some(done) = tasks.join_next().await {
        parts.push(done??);
    }
    parts.sort_by_key(|(part, _)| *part);
    let ids = parts.into_iter().map(|(_, uploaded)| uploaded).collect();
    store.complete_multipart(&path, &id, ids).await?;
    println!("{:.3}", started.elapsed().as_secs_f64());
    Ok(())
}
