// Package rig runs a real Kubernetes control plane, the upstream snapshot controllers, this driver and
// a 3-member TLS etcd cluster under test on the local machine, for end-to-end tests and the playground.
package rig
