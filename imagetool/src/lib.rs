//! skiff-image: OCI image layouts, import/export, unpack and commit.
