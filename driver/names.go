package driver

// Names of a snapshot's objects. The Job, the snapshot PVC and the record share the snapshot id as
// their name (the Job and PVC in the etcd cluster's namespace, the record in the metadata namespace),
// so an operator finds all of them from the id; the functions say which object a name is for.
// manifests/admission-policy.yaml checks these names; every object also carries labelSnapshotID.

// snapshotJobName names the Job that saves and verifies snapshot id.
func snapshotJobName(id string) string { return id }

// snapshotPVCName names the PVC that holds snapshot id's file.
func snapshotPVCName(id string) string { return id }

// recordName names the ConfigMap holding snapshot id's record.
func recordName(id string) string { return id }

// tlsSecretName names the Secret holding the etcd client credentials of snapshot id's Job.
func tlsSecretName(id string) string { return id + "-tls" }
