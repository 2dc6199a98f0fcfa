package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// pagedTags answers tags/list with count tags "t0000"... in pages of at
// most max, linking each page to the next; loop makes the second page link
// back to the first.
func pagedTags(count, max int, loop bool, pages *atomic.Int32) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pages.Add(1)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if n <= 0 || n > max {
			n = max
		}
		start, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Query().Get("last"), "t"))
		if r.URL.Query().Get("last") != "" {
			start++
		}
		var tags []string
		for i := start; i < count && len(tags) < n; i++ {
			tags = append(tags, fmt.Sprintf("t%04d", i))
		}
		if end := start + len(tags); end < count {
			last := tags[len(tags)-1]
			if loop && start > 0 {
				last = "t" + strconv.Itoa(start-1) // back to this page
			}
			w.Header().Set("Link", fmt.Sprintf(`<%s?n=%d&last=%s>; rel="next"`, r.URL.Path, n, last))
		}
		json.NewEncoder(w).Encode(map[string]any{"name": "team/app", "tags": tags})
	}
}

func TestTagsPaged(t *testing.T) {
	var pages atomic.Int32
	var asked atomic.Value
	list := pagedTags(2500, 1000, false, &pages)
	host := fakeRegistry(t, status(http.StatusOK), func(w http.ResponseWriter, r *http.Request) {
		if pages.Load() == 0 {
			asked.Store(r.URL.RawQuery)
		}
		list(w, r)
	})
	c, err := New(Options{Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Tags(context.Background(), host+"/team/app")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Tags) != 2500 || got.Pages != 3 || got.Tags[0] != "t0000" || got.Tags[2499] != "t2499" {
		t.Fatalf("%d tags in %d pages (%s ... %s), want 2500 in 3", len(got.Tags), got.Pages, got.Tags[0], got.Tags[len(got.Tags)-1])
	}
	if q, _ := asked.Load().(string); q != "n=1000" {
		t.Errorf("first page asked with %q, want n=1000", q)
	}
}

func TestTagsLinkLoop(t *testing.T) {
	var pages atomic.Int32
	host := fakeRegistry(t, status(http.StatusOK), pagedTags(30, 10, true, &pages))
	c, _ := New(Options{Retry: fastRetry})
	_, err := c.Tags(context.Background(), host+"/team/app")
	if err == nil || !strings.Contains(err.Error(), "links back to a page it sent before") {
		t.Fatalf("error %v, want the loop named", err)
	}
	if pages.Load() > 4 {
		t.Errorf("%d pages fetched for a loop", pages.Load())
	}
}

func TestTagsRepositoryMissing(t *testing.T) {
	host := fakeRegistry(t, status(http.StatusOK), registryError("NAME_UNKNOWN"))
	c, _ := New(Options{Retry: fastRetry})
	if _, err := c.Tags(context.Background(), host+"/team/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("error %v, want ErrNotFound", err)
	}
	web := fakeRegistry(t, status(http.StatusOK), htmlPage)
	_, err := c.Tags(context.Background(), web+"/team/none")
	var nr *NotRegistryError
	if !errors.As(err, &nr) || errors.Is(err, ErrNotFound) {
		t.Fatalf("an HTML 404: %v, want a NotRegistryError", err)
	}
}
