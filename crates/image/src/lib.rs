//! OCI images: content-addressed blob store, import of root filesystems and archives, registry client, layer unpacking.
