// Package driver implements a CSI driver that takes verified etcd snapshots through Kubernetes Jobs.
//
// The package is flat; its files form families by name prefix. A reader starts from the entry point:
//
//	CSI services      identityserver.go, controllerserver.go, groupcontrollerserver.go: the RPCs on Driver;
//	                  driver.go: Config, New, Driver.Run and the gRPC plumbing; probes.go: HTTP /healthz, /ready
//	request helpers   status.go, validate.go, volumeid.go, snapshotid.go: gRPC statuses, request checks,
//	                  volume and snapshot ids (IsMemberSnapshotID)
//	engine*           the snapshot engine: Engine (NewEngine, Engine.Create, Engine.Delete), its Record and
//	                  RecordStore, class parameters, adoption of an interrupted attempt, the Job monitor,
//	                  the snapshot's volume kept with Retain while it exists, or the record Lost (enginevolume.go)
//	job*              the snapshot Job and what runs in it: the Job, its PVC and TLS Secret, its status
//	                  and failures (Engine.newSnapshotJob), RunPrepareSave for the step in the pod
//	etcd*             etcd access: CheckCluster (health), discovery of members, client credentials
//	verify*           VerifySnapshot and RunVerify: the snapshot file check, with a bbolt page walker
//	                  (verifybolt.go) and the mvcc scan (verifyscan.go)
//	dynamicgroup*     DynamicGroupController: contents for dynamic VolumeGroupSnapshots, waking the sidecar,
//	                  dropping a deleting content's deletion-secret annotations (dynamicgroupdeletion.go)
//	sweeper*          Sweeper: removes abandoned Pending records and pre-created contents
//	schedule*         ScheduleController: EtcdSnapshotSchedule runs, retention and status
//	restore*          Restore and RunRestore: the restore command (plan, layout, ids, Jobs, volumes, check)
//	restorestep*      RunRestoreStep: the prepare and swap steps the restore Jobs run
//	labels.go         this project's label and annotation keys; upstreamnames.go: external-snapshotter's
//	                  and CSI's names; names.go: the names of a snapshot's objects; defaults.go: the
//	                  defaults main.go's flags share (the driver's and the subcommands')
//	leader.go, events.go, metrics.go, workqueue.go: leader election (LeaderElectionConfig), Event
//	                  scheme, Prometheus collectors, the controllers' shared worker step (processNextKey)
package driver
