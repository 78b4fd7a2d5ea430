// The pod sandbox process of the local cluster (localcluster/): an image FROM scratch holding
// only this static binary stands in for registry.k8s.io/pause, which cannot be pulled here.
module carstream.local/toolchain/pause

go 1.26.0
