package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// recordKey is the key of a record ConfigMap's data holding the record's JSON.
const recordKey = "record.json"

// errNoChange, returned by an update's mutate function, ends the update without writing.
var errNoChange = errors.New("metadata: no change")

// metadataStore keeps one ConfigMap per snapshot (never one aggregated map: the 1 MiB object limit).
// Reads come from an informer cache, so Get costs the same at 10,000 snapshots as at ten; the API
// is asked only on a cache miss (a write the watch has not delivered yet) and after a conflict.
type metadataStore struct {
	kube      kubernetes.Interface
	namespace string
	cache     corelisters.ConfigMapNamespaceLister

	// deleted holds ids this process deleted whose deletion the cache has not shown yet, so a Get
	// right after Delete does not resurrect the record from the cache.
	mu      sync.Mutex
	deleted map[string]bool
	// watchers are closed at the cache's next change of their record (watch, changed).
	watchers map[string][]chan struct{}
}

// get returns the record of id, or nil when there is none.
func (s *metadataStore) get(ctx context.Context, id string) (*Record, error) {
	cm, err := s.cache.Get(recordName(id))
	if apierrors.IsNotFound(err) || s.isDeleted(id) {
		return s.getLive(ctx, id)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading metadata %s/%s from cache: %v", s.namespace, id, err)
	}
	return decodeRecord(cm)
}

// getLive reads the record of id from the API server, bypassing the cache; nil when there is none.
func (s *metadataStore) getLive(ctx context.Context, id string) (*Record, error) {
	cm, err := s.kube.CoreV1().ConfigMaps(s.namespace).Get(ctx, recordName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, kubeStatus(err, "reading metadata ConfigMap %s/%s", s.namespace, id)
	}
	return decodeRecord(cm)
}

// list returns every record in the cache.
func (s *metadataStore) list() ([]*Record, error) {
	cms, err := s.cache.List(managedSelector())
	if err != nil {
		return nil, err
	}
	out := make([]*Record, 0, len(cms))
	for _, cm := range cms {
		if rec, err := decodeRecord(cm); err == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// create writes a new record. When one already exists it is returned instead, with created=false, so
// the caller can compare it with its request.
func (s *metadataStore) create(ctx context.Context, rec *Record) (out *Record, created bool, err error) {
	cm, err := encodeRecord(s.namespace, rec)
	if err != nil {
		return nil, false, err
	}
	_, err = s.kube.CoreV1().ConfigMaps(s.namespace).Create(ctx, cm, metav1.CreateOptions{})
	if err == nil {
		s.forgetDeleted(rec.ID)
	}
	if apierrors.IsAlreadyExists(err) {
		existing, gerr := s.getLive(ctx, rec.ID)
		if gerr != nil || existing != nil {
			return existing, false, gerr
		}
		return nil, false, status.Errorf(codes.Aborted, "metadata ConfigMap %s/%s was deleted while being created; retry", s.namespace, rec.ID)
	}
	if err != nil {
		return nil, false, kubeStatus(err, "creating metadata ConfigMap %s/%s", s.namespace, rec.ID)
	}
	return rec, true, nil
}

// update applies mutate to the stored record of id and writes it with the resourceVersion it was read
// at, re-reading from the API server and retrying on conflict. mutate may return errNoChange. The
// result is nil (and no error) when the record does not exist.
func (s *metadataStore) update(ctx context.Context, id string, mutate func(*Record) error) (*Record, error) {
	var out *Record
	fromCache := true
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cm, err := s.read(ctx, id, fromCache)
		// A conflict means the cache is behind; later attempts ask the API server.
		fromCache = false
		if err != nil || cm == nil {
			out = nil
			return err
		}
		rec, err := decodeRecord(cm)
		if err != nil {
			return err
		}
		if err := mutate(rec); err != nil {
			out = rec
			return err
		}
		next, err := encodeRecord(s.namespace, rec)
		if err != nil {
			return err
		}
		next.ResourceVersion = cm.ResourceVersion
		next.UID = cm.UID
		if _, err := s.kube.CoreV1().ConfigMaps(s.namespace).Update(ctx, next, metav1.UpdateOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				out = nil
				return nil
			}
			return err
		}
		out = rec
		return nil
	})
	switch {
	case errors.Is(err, errNoChange):
		return out, nil
	case err == nil:
		return out, nil
	case status.Code(err) != codes.Unknown:
		return nil, err
	default:
		return nil, kubeStatus(err, "updating metadata ConfigMap %s/%s", s.namespace, id)
	}
}

// read returns the ConfigMap of id from the cache (falling back to the API server on a miss) or
// straight from the API server; nil when it does not exist.
func (s *metadataStore) read(ctx context.Context, id string, fromCache bool) (*corev1.ConfigMap, error) {
	if fromCache && !s.isDeleted(id) {
		if cm, err := s.cache.Get(recordName(id)); err == nil {
			return cm, nil
		}
	}
	cm, err := s.kube.CoreV1().ConfigMaps(s.namespace).Get(ctx, recordName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return cm, err
}

// delete removes the record of id; a missing record is not an error.
func (s *metadataStore) delete(ctx context.Context, id string) error {
	// Marked before the call so the informer's delete event, which clears the mark, always comes after.
	s.mu.Lock()
	if s.deleted == nil {
		s.deleted = map[string]bool{}
	}
	s.deleted[id] = true
	s.mu.Unlock()
	err := s.kube.CoreV1().ConfigMaps(s.namespace).Delete(ctx, recordName(id), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		s.forgetDeleted(id)
		return kubeStatus(err, "deleting metadata ConfigMap %s/%s", s.namespace, id)
	}
	if _, cerr := s.cache.Get(recordName(id)); apierrors.IsNotFound(cerr) {
		// No delete event will come for what the cache does not hold.
		s.forgetDeleted(id)
	}
	return nil
}

// isDeleted reports whether this process deleted id and the cache may still show it.
func (s *metadataStore) isDeleted(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleted[id]
}

// forgetDeleted drops id from the deleted set: the cache caught up, or the id was created again.
func (s *metadataStore) forgetDeleted(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.deleted, id)
}

// watch returns a channel closed at the cache's next change of the record of id, whichever process
// wrote it, and a function that stops the watch.
func (s *metadataStore) watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watchers == nil {
		s.watchers = map[string][]chan struct{}{}
	}
	s.watchers[id] = append(s.watchers[id], ch)
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.watchers[id] = slices.DeleteFunc(s.watchers[id], func(c chan struct{}) bool { return c == ch })
		if len(s.watchers[id]) == 0 {
			delete(s.watchers, id)
		}
	}
}

// changed is the informer's note that the cache holds a new version of a metadata ConfigMap.
func (s *metadataStore) changed(obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.watchers[cm.Name] {
		close(ch)
	}
	delete(s.watchers, cm.Name)
}

func encodeRecord(namespace string, rec *Record) (*corev1.ConfigMap, error) {
	rec.Version = recordVersion
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding metadata of %s: %v", rec.ID, err)
	}
	labels := objectLabels(rec.ID, rec.Cluster)
	labels[labelNamespace] = rec.Namespace
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: recordName(rec.ID), Namespace: namespace, Labels: labels},
		Data:       map[string]string{recordKey: string(data)},
	}, nil
}

func decodeRecord(cm *corev1.ConfigMap) (*Record, error) {
	raw, ok := cm.Data[recordKey]
	if !ok {
		return nil, status.Errorf(codes.Internal, "metadata ConfigMap %s/%s has no %s", cm.Namespace, cm.Name, recordKey)
	}
	rec := &Record{}
	if err := json.Unmarshal([]byte(raw), rec); err != nil {
		return nil, status.Errorf(codes.Internal, "metadata ConfigMap %s/%s: %s is not a valid record: %v", cm.Namespace, cm.Name, recordKey, err)
	}
	return rec, nil
}

// metadataInformers is the informer factory of the metadata ConfigMaps: the driver's own objects in
// namespace.
func metadataInformers(kube kubernetes.Interface, namespace string) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(namespace), managedInformerOption())
}

// RecordStore is the driver's metadata store for a program outside this package: tools/bench
// measures its Get and Put latency on a real API server with thousands of records. It makes the
// same calls as the engine's store (informer-cache reads, resourceVersion writes) on its own
// informer, so it costs what the driver's does.
type RecordStore struct {
	store    *metadataStore
	informer cache.SharedIndexInformer
}

// NewRecordStore starts a store on the metadata ConfigMaps of namespace and returns once its cache
// has synced; it runs until ctx ends.
func NewRecordStore(ctx context.Context, kube kubernetes.Interface, namespace string) (*RecordStore, error) {
	factory := metadataInformers(kube, namespace)
	cms := factory.Core().V1().ConfigMaps()
	s := &metadataStore{kube: kube, namespace: namespace, cache: cms.Lister().ConfigMaps(namespace)}
	informer := cms.Informer()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil, fmt.Errorf("metadata store: the ConfigMap cache of namespace %s did not sync: %w", namespace, context.Cause(ctx))
	}
	return &RecordStore{store: s, informer: informer}, nil
}

// Get returns the record of id, or nil when there is none.
func (r *RecordStore) Get(ctx context.Context, id string) (*Record, error) {
	return r.store.get(ctx, id)
}

// Create writes rec as a new record; when one with its id exists, that one is returned with
// created=false.
func (r *RecordStore) Create(ctx context.Context, rec *Record) (out *Record, created bool, err error) {
	return r.store.create(ctx, rec)
}

// Update applies mutate to the record of id and writes it, retrying on conflict; nil when the
// record does not exist.
func (r *RecordStore) Update(ctx context.Context, id string, mutate func(*Record) error) (*Record, error) {
	return r.store.update(ctx, id, mutate)
}

// Cached is the number of records the store's cache holds.
func (r *RecordStore) Cached() int {
	return len(r.informer.GetStore().ListKeys())
}
