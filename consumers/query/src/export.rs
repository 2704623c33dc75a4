//! CSV exports, streamed: rows go from PostgreSQL into the response body in
//! chunks, through a bounded channel, so memory stays flat however long the
//! export and a slow client slows the query instead of filling a buffer.

use axum::{
    body::{Body, Bytes},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{StreamExt, TryStreamExt, stream};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tributary_platform::http::Problem;

use crate::{params::ListRequest, sql};

/// Bytes gathered before a chunk is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks in flight between the query and the client.
const CHUNKS_IN_FLIGHT: usize = 4;

type Chunk = Result<Bytes, Problem>;

/// The request's rows as CSV with a header row: every matching row, or the
/// first `limit`. Without `limit`, a result larger than `max_rows` is
/// refused before anything is sent, so an export is never silently cut.
pub(crate) async fn csv(
    pool: PgPool,
    request: ListRequest,
    max_rows: i64,
) -> Result<Response, Problem> {
    let filename = format!("{}.csv", request.model.path);
    let (sender, mut receiver) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        if let Err(problem) = produce(&pool, request, max_rows, &sender).await {
            let _ = sender.send(Err(problem)).await;
        }
    });
    // The header row is sent with the first row, so errors found until then
    // (too many rows, a failing query) are still a problem document.
    let first = receiver
        .recv()
        .await
        .ok_or_else(|| Problem::internal(&anyhow::anyhow!("the CSV export stopped")))??;
    let rest = stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
    .map_err(|problem| std::io::Error::other(problem.detail));
    let body = Body::from_stream(stream::once(async { Ok(first) }).chain(rest));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// Runs the export in one read-only snapshot (the size check and the rows
/// agree), sending CSV chunks until done, or until the client goes away.
async fn produce(
    pool: &PgPool,
    request: ListRequest,
    max_rows: i64,
    sender: &mpsc::Sender<Chunk>,
) -> Result<(), Problem> {
    let internal =
        |e: sqlx::Error| Problem::internal(&anyhow::Error::from(e).context("CSV export"));
    let mut tx = pool.begin().await.map_err(internal)?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    let rows = match request.limit {
        Some(limit) => limit,
        None => {
            let matching: i64 = sql::count_up_to(&request, max_rows)
                .build_query_scalar()
                .fetch_one(&mut *tx)
                .await
                .map_err(internal)?;
            if matching > max_rows {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "Export too large",
                    format!(
                        "more than {max_rows} rows match, the most one CSV export holds \
                         (query.csv_max_rows): narrow the filters or from/to, or pass limit \
                         for the first rows"
                    ),
                )
                .with("max_rows", max_rows));
            }
            max_rows
        }
    };
    let model = request.model;
    let mut query = sql::select(&request, rows);
    let mut rows = query.build().fetch(&mut *tx);
    // The first row (or the end) before the header: a query that fails
    // fails before the response starts.
    let mut next = rows.try_next().await.map_err(internal)?;
    let mut writer = csv_writer();
    writer
        .write_record(model.columns.iter().map(|c| c.name))
        .map_err(|e| Problem::internal(&e.into()))?;
    let mut written: u64 = 0;
    while let Some(row) = next {
        let row = sql::decode(model, &row).map_err(internal)?;
        writer
            .write_record(row.values.iter().map(|v| v.text().unwrap_or_default()))
            .map_err(|e| Problem::internal(&e.into()))?;
        written += 1;
        // The first chunk goes at once, so the response starts early.
        if (written == 1 || writer.get_ref().len() >= CHUNK_BYTES)
            && !send(sender, &mut writer).await
        {
            tracing::info!(rows = written, "CSV export abandoned by the client");
            return Ok(());
        }
        next = rows.try_next().await.map_err(internal)?;
    }
    send(sender, &mut writer).await;
    tracing::info!(table = model.table, rows = written, "CSV export sent");
    Ok(())
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(CHUNK_BYTES + 4096))
}

/// Sends what `writer` holds and starts it afresh; `false` when the client is gone.
async fn send(sender: &mpsc::Sender<Chunk>, writer: &mut csv::Writer<Vec<u8>>) -> bool {
    let full = std::mem::replace(writer, csv_writer());
    match full.into_inner() {
        Ok(bytes) if bytes.is_empty() => true,
        Ok(bytes) => sender.send(Ok(Bytes::from(bytes))).await.is_ok(),
        Err(error) => {
            let problem = Problem::internal(&anyhow::anyhow!("writing CSV: {}", error.error()));
            let _ = sender.send(Err(problem)).await;
            false
        }
    }
}
