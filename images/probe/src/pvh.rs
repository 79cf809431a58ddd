//! placeholder replaced by the PVH stub
