// Package e2e holds the end-to-end tests of the driver: snapshots through the unmodified upstream
// snapshot-controller and csi-snapshotter on the real local cluster of package tools/rig.
package e2e
