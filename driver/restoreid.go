package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
)

// restoreIDPattern is what a restore id may look like: it goes into Job, PV and directory names.
var restoreIDPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$`)

// resolveRestoreID picks up an interrupted restore of the same snapshot into the same PVCs (from the
// StatefulSet's annotations or its Jobs) so a rerun finishes it; another restore in progress refuses.
func (p *restorePlan) resolveRestoreID(ctx context.Context, cfg RestoreConfig) error {
	found := sets.New[string]()
	if sts := p.StatefulSet; sts != nil && sts.Annotations[keyRestoreID] != "" {
		rid, source := sts.Annotations[keyRestoreID], sts.Annotations[keyRestoreSource]
		if source != p.Record.ID {
			return fmt.Errorf("StatefulSet %s/%s is held by restore %s of snapshot %s (annotation %s); rerun that restore to finish it, or remove the annotations %s, %s and %s and scale it back by hand",
				sts.Namespace, sts.Name, rid, source, keyRestoreID, keyRestoreID, keyRestoreSource, annotationRestoreReplicas)
		}
		found.Insert(rid)
		if n, err := strconv.Atoi(sts.Annotations[annotationRestoreReplicas]); err == nil {
			p.FormerReplicas = int32(n)
		}
	}
	jobs, err := cfg.Kube.BatchV1().Jobs(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.Set{labelManagedBy: managedByRestore}.String()})
	if err != nil {
		return fmt.Errorf("listing restore Jobs in namespace %s: %w", p.Namespace, err)
	}
	targets := sets.New[string]()
	for _, m := range p.Members {
		targets.Insert(m.PVC)
	}
	for _, j := range jobs.Items {
		if !targets.Has(j.Annotations[annotationRestorePVC]) {
			continue
		}
		if src := j.Labels[keyRestoreSource]; src != p.Record.ID {
			return fmt.Errorf("Job %s/%s of restore %s (snapshot %s) still targets PVC %s; wait for it or delete it (kubectl delete job -n %s -l %s=%s)",
				j.Namespace, j.Name, j.Labels[keyRestoreID], src, j.Annotations[annotationRestorePVC], j.Namespace, keyRestoreID, j.Labels[keyRestoreID])
		}
		found.Insert(j.Labels[keyRestoreID])
	}
	switch {
	case len(found) > 1:
		return fmt.Errorf("several interrupted restores of snapshot %s target these PVCs (%s); delete all but one's Jobs", p.Record.ID, strings.Join(sets.List(found), ", "))
	case len(found) == 1:
		rid := sets.List(found)[0]
		if cfg.RestoreID != "" && cfg.RestoreID != rid {
			return fmt.Errorf("restore %s of the same snapshot was interrupted on these PVCs; rerun with -restore-id %s (or without -restore-id)", rid, rid)
		}
		p.ID, p.Resumed = rid, true
	case cfg.RestoreID != "":
		p.ID = cfg.RestoreID
	default:
		p.ID = newRestoreID()
	}
	return nil
}

// newRestoreID is a fresh, sortable, short id: the UTC time and 16 random bits.
func newRestoreID() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return strings.ToLower(time.Now().UTC().Format("20060102t150405")) + "-" + hex.EncodeToString(b)
}
