package driver

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// saveEndpoint is the --endpoints value of a snapshot Job's save container.
func saveEndpoint(job *batchv1.Job) string {
	for _, c := range job.Spec.Template.Spec.InitContainers {
		if c.Name != saveContainer {
			continue
		}
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--endpoints="); ok {
				return v
			}
		}
	}
	return ""
}

// setEndpoint points job's save container at endpoint.
func setEndpoint(job *batchv1.Job, endpoint string) {
	for _, c := range job.Spec.Template.Spec.InitContainers {
		if c.Name != saveContainer {
			continue
		}
		for i, a := range c.Args {
			if strings.HasPrefix(a, "--endpoints=") {
				c.Args[i] = "--endpoints=" + endpoint
			}
		}
	}
}

// TestResumeRecordsTheJobThatRuns interrupts a Create after its objects exist (the record still
// Pending), changes what the earlier attempt had planned, and retries: the record must then describe
// exactly the Job that runs and the PVC it writes to. A suspended Job that differs from the new plan
// never ran and is replaced; one that started is deleted and the retry answers ABORTED (the next
// retry starts afresh); a PVC is adopted with its real size, or removed when too small.
func TestResumeRecordsTheJobThatRuns(t *testing.T) {
	cases := []struct {
		name string
		// otherMember makes the earlier attempt's Job and record name another member than the leader;
		// stopIt stops that member before the retry.
		otherMember, stopIt bool
		deadline            int64  // the earlier Job's activeDeadlineSeconds, when set
		started             bool   // the earlier Job was resumed (its pod may run)
		pvcSize             string // the earlier PVC's request, when set
		code                codes.Code
		newJob              bool // the Job that runs is not the earlier one
	}{
		{name: "same plan: the Job is adopted"},
		{name: "earlier attempt chose another member", otherMember: true, newJob: true},
		{name: "earlier attempt's member is down now", otherMember: true, stopIt: true, newJob: true},
		{name: "earlier attempt had another deadline", deadline: 1, newJob: true},
		{name: "earlier attempt's Job started", otherMember: true, started: true, code: codes.Aborted, newJob: true},
		{name: "earlier PVC is larger than needed", pvcSize: "5Gi"},
		{name: "earlier PVC is too small now", pvcSize: "1Mi", code: codes.Aborted, newJob: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, cluster := startEngineWithEtcd(t)
			req := groupRequest(cluster, "groupsnapshot-resume")
			// What the interrupted attempt had planned, and left behind.
			first, earlier, rv := f.interruptedCreate(req)
			jobs := f.admin.BatchV1().Jobs(fxNS)
			job, err := jobs.Get(f.ctx, first.ID, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			job.Spec.Suspend = ptr.To(!tc.started)
			if tc.otherMember {
				// Not the leader, nor the member behind the client Service (etcdWorld), which must answer.
				i := slices.IndexFunc(earlier.Members, func(m MemberRecord) bool {
					return m.Name != first.SourceMember.Name && m.ClientURLs[0] != cluster.ClientURLs[0]
				})
				other := earlier.Members[i]
				earlier.SourceMember = &SourceMember{ID: other.ID, Name: other.Name, Endpoint: other.ClientURLs[0], DBSize: first.SourceMember.DBSize}
				setEndpoint(job, other.ClientURLs[0])
				if tc.stopIt {
					cluster.Stop(slices.Index(cluster.ClientURLs, other.ClientURLs[0]))
				}
			}
			if tc.deadline != 0 {
				job.Spec.ActiveDeadlineSeconds = ptr.To(tc.deadline)
			}
			if job, err = jobs.Update(f.ctx, job, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if tc.pvcSize != "" {
				pvcs := f.admin.CoreV1().PersistentVolumeClaims(fxNS)
				pvc, err := pvcs.Get(f.ctx, first.ID, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(tc.pvcSize)
				if _, err := pvcs.Update(f.ctx, pvc, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
				earlier.PVCSize = tc.pvcSize
			}
			f.storeRecord(earlier, rv)

			f = startFixtureEngine(t, f.kube)
			jobDeletes := f.countActions("delete", "jobs")
			rec, err := f.engine.Create(f.ctx, req)
			if tc.code != codes.OK {
				if status.Code(err) != tc.code {
					t.Fatalf("retry = %+v, %v; want %s", rec, err, tc.code)
				}
				if got := f.objectsOf(first.ID); !sameObjects(got, noneLeft) {
					t.Fatalf("after the refused retry: %v; want everything rolled back", got)
				}
				// The CO retries again: a fresh start (once the cache has seen the rollback).
				eventually(t, "a fresh retry", func() error {
					rec, err = f.engine.Create(f.ctx, req)
					return err
				})
			} else if err != nil {
				t.Fatalf("retry: %v", err)
			}
			if rec.Phase != PhaseRunning {
				t.Fatalf("retry answered %s, want Running", rec.Phase)
			}
			live, err := f.engine.meta.getLive(f.ctx, rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			runs, err := f.admin.BatchV1().Jobs(fxNS).Get(f.ctx, rec.ID, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pvc, err := f.admin.CoreV1().PersistentVolumeClaims(fxNS).Get(f.ctx, rec.ID, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}

			// The record names the member and endpoint the running Job saves from, and that member is
			// the one this attempt's health check chose (the leader, which is up).
			for _, r := range []*Record{rec, live} {
				if r.SourceMember == nil || r.SourceMember.Endpoint != saveEndpoint(runs) {
					t.Errorf("record source member %+v; the Job that runs saves from %s", r.SourceMember, saveEndpoint(runs))
				}
				if r.SourceMember != nil && (r.SourceMember.Name != first.SourceMember.Name || !r.SourceMember.Leader) {
					t.Errorf("record source member %s (leader %v); the health check chose %s", r.SourceMember.Name, r.SourceMember.Leader, first.SourceMember.Name)
				}
				q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
				if r.PVCSize != q.String() {
					t.Errorf("record pvcSize %s; the PVC requests %s", r.PVCSize, q.String())
				}
			}
			if want := jobDeadline(live.SourceMember.DBSize); ptr.Deref(runs.Spec.ActiveDeadlineSeconds, 0) != want {
				t.Errorf("the Job that runs has activeDeadlineSeconds %d, want %d for the recorded db size", ptr.Deref(runs.Spec.ActiveDeadlineSeconds, 0), want)
			}
			if isSuspended(runs) {
				t.Error("the Job that runs is still suspended")
			}
			// The fake API server sets no UIDs: a replaced Job shows as the engine's delete.
			if replaced := f.countActions("delete", "jobs") > jobDeletes; replaced != tc.newJob {
				t.Errorf("the earlier Job was replaced: %v, want %v", replaced, tc.newJob)
			}
			secret, err := f.admin.CoreV1().Secrets(fxNS).Get(f.ctx, tlsSecretName(rec.ID), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].Name != runs.Name || refs[0].UID != runs.UID {
				t.Errorf("Secret owned by %+v; want the Job that runs (%s)", refs, runs.UID)
			}
		})
	}
}
