//! Artifact files: an upload streams into a hidden temporary file beside its final name
//! (`artifacts/<trial>/<artifact>`, see [`results_format::layout`]), bounded in size and synced, and
//! is renamed into place only if the uploader still holds the trial; otherwise it is deleted.

use proto::{pb, Artifact, TrialId};
use results_format::ResultsDir;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use tonic::{Status, Streaming};
use tracing::error;

/// One artifact being received.
pub struct Upload {
    tmp: PathBuf,
    dest: PathBuf,
}

impl Upload {
    /// Creates the trial's artifact folder; the upload then writes to a fresh temporary name.
    pub async fn start(
        dir: &ResultsDir,
        trial: &TrialId,
        artifact: Artifact,
    ) -> Result<Upload, Status> {
        let folder = dir.trial_artifacts(trial);
        tokio::fs::create_dir_all(&folder).await.map_err(|e| {
            error!(path = %folder.display(), error = %e, "creating artifact folder failed");
            Status::internal(format!("creating artifact folder: {e}"))
        })?;
        let dest = dir.artifact(trial, artifact);
        Ok(Upload {
            tmp: stdx::fs::temp_path(&dest),
            dest,
        })
    }

    /// Writes `first` and every following chunk of `stream` to the temporary file, at most
    /// `max` bytes in all (RESOURCE_EXHAUSTED beyond), and syncs it. Returns the size.
    pub async fn receive(
        &self,
        first: Vec<u8>,
        stream: &mut Streaming<pb::ArtifactChunk>,
        max: u64,
    ) -> Result<u64, Status> {
        let io = |e: std::io::Error| {
            error!(path = %self.tmp.display(), error = %e, "writing artifact failed");
            Status::internal(format!("writing artifact: {e}"))
        };
        let mut file = tokio::fs::File::create(&self.tmp).await.map_err(io)?;
        let mut total = 0u64;
        let mut data = first;
        loop {
            total += data.len() as u64;
            if total > max {
                return Err(Status::resource_exhausted(format!(
                    "artifact larger than {max} bytes"
                )));
            }
            file.write_all(&data).await.map_err(io)?;
            match stream.message().await? {
                Some(chunk) => data = chunk.data,
                None => break,
            }
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        Ok(total)
    }

    /// Renames the received file into place (or deletes it if that fails).
    pub async fn keep(self) -> Result<(), Status> {
        if let Err(e) = tokio::fs::rename(&self.tmp, &self.dest).await {
            error!(path = %self.dest.display(), error = %e, "renaming artifact failed");
            self.discard().await;
            return Err(Status::internal(format!("storing artifact: {e}")));
        }
        Ok(())
    }

    /// Deletes what was received.
    pub async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}
