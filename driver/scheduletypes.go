package driver

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The EtcdSnapshotSchedule API (manifests/etcdsnapshotschedule-crd.yaml). There is no code generator
// here, so the controller reads the objects through the dynamic client and converts them to these
// structs; the JSON names are the CRD's.
const (
	scheduleGroup    = "snapshot.etcd.io"
	scheduleVersion  = "v1alpha1"
	scheduleKind     = "EtcdSnapshotSchedule"
	scheduleResource = "etcdsnapshotschedules"

	defaultKeep       = 7
	defaultKeepFailed = 1
)

// ScheduleGVR is the resource of EtcdSnapshotSchedules.
var ScheduleGVR = schema.GroupVersionResource{Group: scheduleGroup, Version: scheduleVersion, Resource: scheduleResource}

// Condition types and reasons on a schedule's status.
const (
	condReady       = "Ready"
	condBackupStale = "BackupStale"

	reasonScheduled       = "Scheduled"
	reasonSuspended       = "Suspended"
	reasonInvalidSchedule = "InvalidSchedule"
	reasonInvalidSource   = "InvalidSource"
	reasonClassNotFound   = "ClassNotFound"
	reasonClassNotOurs    = "ClassOfAnotherDriver"
	reasonCreateFailed    = "CreateFailed"
	reasonRecentSuccess   = "RecentSuccess"
	reasonNoRecentSuccess = "NoRecentSuccess"
	reasonNeverSucceeded  = "NeverSucceeded"
)

// Event reasons recorded on schedules.
const (
	evSnapshotCreated = "SnapshotCreated"
	evSnapshotReady   = "SnapshotReady"
	evSnapshotFailed  = "SnapshotFailed"
	evSnapshotPruned  = "SnapshotPruned"
	evRunMissed       = "RunMissed"
)

// etcdSnapshotSchedule is one EtcdSnapshotSchedule.
type etcdSnapshotSchedule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              scheduleSpec   `json:"spec"`
	Status            scheduleStatus `json:"status,omitempty"`
}

type scheduleSpec struct {
	Schedule                     string             `json:"schedule"`
	TimeZone                     *string            `json:"timeZone,omitempty"`
	Source                       scheduleSource     `json:"source"`
	VolumeGroupSnapshotClassName string             `json:"volumeGroupSnapshotClassName"`
	Retention                    *scheduleRetention `json:"retention,omitempty"`
	Suspend                      bool               `json:"suspend,omitempty"`
	StartingDeadlineSeconds      *int64             `json:"startingDeadlineSeconds,omitempty"`
	SnapshotLabels               map[string]string  `json:"snapshotLabels,omitempty"`
	SnapshotAnnotations          map[string]string  `json:"snapshotAnnotations,omitempty"`
}

type scheduleSource struct {
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
	Cluster  *string               `json:"cluster,omitempty"`
}

type scheduleRetention struct {
	Keep       *int32           `json:"keep,omitempty"`
	KeepFailed *int32           `json:"keepFailed,omitempty"`
	MaxAge     *metav1.Duration `json:"maxAge,omitempty"`
}

type scheduleStatus struct {
	ObservedGeneration     int64              `json:"observedGeneration,omitempty"`
	LastScheduleTime       *metav1.Time       `json:"lastScheduleTime,omitempty"`
	LastSuccessfulTime     *metav1.Time       `json:"lastSuccessfulTime,omitempty"`
	LastMissedScheduleTime *metav1.Time       `json:"lastMissedScheduleTime,omitempty"`
	NextScheduleTime       *metav1.Time       `json:"nextScheduleTime,omitempty"`
	LastSnapshot           *lastSnapshot      `json:"lastSnapshot,omitempty"`
	ReadySnapshots         int32              `json:"readySnapshots"`
	Conditions             []metav1.Condition `json:"conditions,omitempty"`
}

// lastSnapshot describes the schedule's most recent run.
type lastSnapshot struct {
	Name       string `json:"name"`
	ReadyToUse bool   `json:"readyToUse"`
	Revision   int64  `json:"revision,omitempty"`
	Size       int64  `json:"size,omitempty"`
	Error      string `json:"error,omitempty"`
}

// keep, keepFailed and maxAge apply the CRD's defaults, so an object written before a default existed
// (or by a client that skipped defaulting, as the fake clients do) reads the same.
func (s *scheduleSpec) keep() int {
	if s.Retention == nil || s.Retention.Keep == nil {
		return defaultKeep
	}
	return int(*s.Retention.Keep)
}

func (s *scheduleSpec) keepFailed() int {
	if s.Retention == nil || s.Retention.KeepFailed == nil {
		return defaultKeepFailed
	}
	return int(*s.Retention.KeepFailed)
}

func (s *scheduleSpec) maxAge() *metav1.Duration {
	if s.Retention == nil {
		return nil
	}
	return s.Retention.MaxAge
}

// scheduleFromUnstructured converts what the dynamic client returns.
func scheduleFromUnstructured(u *unstructured.Unstructured) (*etcdSnapshotSchedule, error) {
	var s etcdSnapshotSchedule
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &s); err != nil {
		return nil, fmt.Errorf("schedule %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &s, nil
}

// statusToUnstructured returns a copy of u with its status replaced by st.
func statusToUnstructured(u *unstructured.Unstructured, st *scheduleStatus) (*unstructured.Unstructured, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(st)
	if err != nil {
		return nil, err
	}
	out := u.DeepCopy()
	out.Object["status"] = obj
	return out, nil
}
