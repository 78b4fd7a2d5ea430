"""A real two-node Kubernetes cluster on this machine, for carstream's end-to-end tests.

Everything runs as host processes recorded by PID (`python -m localcluster up|down|status`):
dockerd (image builds), one containerd and one kubelet per node, etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, CoreDNS and kube-proxy. The binaries and the base
image come from `build/bootstrap cluster`; nothing is pulled from a registry. Every address
stays on this machine: node IPs are /32 aliases on `lo`, pods live on one CNI bridge per node,
Services in 10.96.0.0/16. `down` drains the pods, stops every process in order and restores
the host state recorded before `up` (sysctls, iptables, links, addresses, mounts, cgroups).
"""
