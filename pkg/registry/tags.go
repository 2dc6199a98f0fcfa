package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TagPageSize is the `n` a tag listing asks for per page: what most
// registries allow at most (ECR's maximum, go-containerregistry's default).
const TagPageSize = 1000

// maxTagPages bounds a listing: a registry whose Link header never ends (or
// leads in a circle) must not keep check going for ever. 10,000 pages are
// ten million tags at TagPageSize.
const maxTagPages = 10000

// TagList is a repository's tags in the registry's order, and the number of
// pages the registry sent them in.
type TagList struct {
	Tags  []string
	Pages int
}

// Of is the listing of repo as check and the put log it: "1103 tags of
// registry.example.com/team/app (2 pages)".
func (l TagList) Of(repo string) string {
	pages := "pages"
	if l.Pages == 1 {
		pages = "page"
	}
	return fmt.Sprintf("%d tags of %s (%d %s)", len(l.Tags), repo, l.Pages, pages)
}

// Tags lists repo's tags (`GET /v2/<name>/tags/list?n=1000`), following the
// registry's `Link` header from page to page. ErrNotFound when the registry
// itself says the repository does not exist.
func (c *Client) Tags(ctx context.Context, repo string) (TagList, error) {
	r, err := c.Repository(repo)
	if err != nil {
		return TagList{}, err
	}
	var list TagList
	_, err = c.firstOf(ctx, r, func(cand name.Repository) (v1.Hash, error) {
		l, err := c.listTags(ctx, cand, r)
		list = l
		return v1.Hash{}, err
	})
	return list, err
}

func (c *Client) listTags(ctx context.Context, repo, origin name.Repository) (TagList, error) {
	p, err := remote.NewPuller(append(c.options(ctx, repo, origin), remote.WithPageSize(TagPageSize))...)
	if err != nil {
		return TagList{}, err
	}
	l, err := p.Lister(ctx, repo)
	if err != nil {
		return TagList{}, c.tagsNotFound(ctx, repo, err)
	}
	var list TagList
	seen, visited := map[string]bool{}, map[string]bool{}
	for l.HasNext() {
		page, err := l.Next(ctx)
		if err != nil {
			return TagList{}, fmt.Errorf("list the tags of %s (page %d): %w", repo, list.Pages+1, err)
		}
		list.Pages++
		for _, t := range page.Tags {
			if !seen[t] {
				seen[t] = true
				list.Tags = append(list.Tags, t)
			}
		}
		switch {
		case page.Next == "":
		case visited[page.Next]:
			return TagList{}, fmt.Errorf("list the tags of %s: the registry's page %d links back to a page it sent before (%s)", repo, list.Pages, page.Next)
		case list.Pages >= maxTagPages:
			return TagList{}, fmt.Errorf("list the tags of %s: the registry sent %d pages (%d tags) and links to more; giving up", repo, list.Pages, len(list.Tags))
		}
		visited[page.Next] = true
	}
	return list, nil
}

// tagsNotFound is notFound for a tag listing: only a registry's own 404
// with an error code (NAME_UNKNOWN), from a host that answers /v2/ as a
// registry, means the repository does not exist.
func (c *Client) tagsNotFound(ctx context.Context, repo name.Repository, err error) error {
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound || te.Request == nil {
		return err
	}
	first := firstRequest(te.Request)
	host, u := repo.RegistryStr(), first.URL
	switch {
	case u.Host != host:
		return err
	case u.Path == "/v2/":
		return &NotRegistryError{Host: host, Detail: "GET /v2/ gave 404", Err: err}
	case !hasErrorCode(te):
		return &NotRegistryError{Host: host, Repo: repo.RepositoryStr(),
			Detail: fmt.Sprintf("GET %s gave a 404 that is not a registry's error: its body names no error code", u.Path), Err: err}
	}
	if perr := c.answersAsRegistry(ctx, u.Scheme, host, err); perr != nil {
		return perr
	}
	return fmt.Errorf("%w: %w", ErrNotFound, err)
}
