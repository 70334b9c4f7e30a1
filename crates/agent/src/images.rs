//! Images on the instance: pulled once into a local blob store, each layer
//! unpacked once into a layer cache, shared by every container that uses it.

use crate::runtime::ImageConfig;
use berth_image::client::{Client, PullOptions, PullPolicy};
use berth_image::unpack::LayerCache;
use berth_image::BlobStore;
use std::path::{Path, PathBuf};

/// An image ready to run: its layer directories and its config.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
    pub digest: String,
}

/// Where the supervisor gets images from (a trait so tests can stand in).
pub trait ImageSource: Send + Sync {
    /// Pulls (unless present) and unpacks `reference`. Blocking.
    fn prepare(&self, reference: &str) -> anyhow::Result<Prepared>;
}

impl ImageSource for Images {
    fn prepare(&self, reference: &str) -> anyhow::Result<Prepared> {
        Images::prepare(self, reference)
    }
}

impl<T: ImageSource + ?Sized> ImageSource for std::sync::Arc<T> {
    fn prepare(&self, reference: &str) -> anyhow::Result<Prepared> {
        (**self).prepare(reference)
    }
}

/// The instance's images.
pub struct Images {
    store: BlobStore,
    layers: LayerCache,
    /// The built-in registry (the server), `http://host:port`.
    registry: String,
    /// The built-in registry takes the instance id and its credential, read
    /// at each pull because the credential is issued after the agent starts.
    instance_id: String,
    credential_file: PathBuf,
    handle: tokio::runtime::Handle,
}

impl Images {
    /// Images under `dir`; bare names are pulled from `registry`.
    pub fn open(
        dir: &Path,
        registry: &str,
        instance_id: &str,
        credential_file: PathBuf,
        handle: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let store = BlobStore::open(dir.join("blobs"))?;
        let layers = LayerCache::open(dir.join("layers"))?;
        Client::new(registry)?;
        Ok(Self {
            store,
            layers,
            registry: registry.to_string(),
            instance_id: instance_id.to_string(),
            credential_file,
            handle,
        })
    }

    fn client(&self) -> anyhow::Result<Client> {
        let mut client = Client::new(&self.registry)?;
        if let Ok(c) = std::fs::read_to_string(&self.credential_file) {
            client = client.with_credentials(&self.instance_id, c.trim());
        }
        Ok(client)
    }

    /// Pulls (unless present) and unpacks `reference`. Blocking: call it from
    /// a blocking thread, never from the async runtime itself.
    pub fn prepare(&self, reference: &str) -> anyhow::Result<Prepared> {
        let opts = PullOptions {
            policy: PullPolicy::IfNotPresent,
            platform: None,
        };
        let client = self.client()?;
        let pulled = self
            .handle
            .block_on(client.pull(&self.store, reference, &opts))?;
        let layers = self.layers.layer_dirs(&self.store, &pulled.manifest)?;
        let c = &pulled.config;
        Ok(Prepared {
            layers,
            config: ImageConfig {
                entrypoint: c.entrypoint.clone(),
                cmd: c.cmd.clone(),
                env: c.env.clone(),
                working_dir: c.working_dir.clone(),
                user: c.user.clone(),
            },
            digest: pulled.digest.to_string(),
        })
    }
}
