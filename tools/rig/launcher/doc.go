// Package launcher is the logic of the rig's etcd StatefulSet entrypoint (command
// tools/rig/cmd/etcd-launcher): it maps a pod's ordinal to its member's loopback ports and TLS files.
//
//	etcd-launcher --launcher-members=FILE --launcher-tls-dir=DIR [--launcher-etcd=NAME] [etcd flags...]
//
// FILE is the member table (Table, JSON) the rig publishes in a ConfigMap; DIR holds ca.crt and
// <pod>.crt, <pod>.key of every member, from a Secret. The pod name comes from the environment
// variable POD_NAME (downward API, metadata.name). Every other argument is passed to etcd unchanged
// after the flags the launcher derives (Table.EtcdArgs), for example --data-dir and the raft timing.
// On a pod runner every pod shares the host's loopback, so each ordinal needs its own ports; in a real
// cluster each pod has its own IP and the table would not be needed.
package launcher
