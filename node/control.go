package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

// endpoint is one control-socket operation: it gets the request and returns
// the value to send as JSON (nil for 204 No Content) or an error (an
// *api.Error keeps its code; anything else is CodeInternal).
type endpoint func(r *http.Request) (any, error)

// controlHandler is the HTTP handler of the control socket (see package api
// for the contract). Every operation is a ServeMux pattern with its method
// ("POST /v1/attach"); any other method on a known path answers
// CodeMethodNotAllow as JSON, an unknown path CodeNotFound.
func (n *Node) controlHandler() http.Handler {
	routes := map[string]endpoint{
		"GET /v1/status": func(*http.Request) (any, error) { return n.Status(), nil },
		"GET /v1/peers":  func(*http.Request) (any, error) { return n.Peers() },
		"POST /v1/down":  n.handleDown,
		"POST /v1/attach": func(r *http.Request) (any, error) {
			var req api.AttachRequest
			if err := decodeBody(r, &req); err != nil {
				return nil, err
			}
			at, err := n.Attach(r.Context(), req)
			if err != nil {
				n.metrics.attachFailed(err)
			}
			return at, err
		},
		"POST /v1/detach": func(r *http.Request) (any, error) {
			var req api.DetachRequest
			if err := decodeBody(r, &req); err != nil {
				return nil, err
			}
			err := n.Detach(r.Context(), req.Container, "")
			if err != nil {
				n.metrics.detachFailed(err)
			}
			return nil, err
		},
		"GET /v1/attachments": func(*http.Request) (any, error) { return n.Attachments(), nil },
		"GET /v1/services":    func(*http.Request) (any, error) { return n.Services(), nil },
		"GET /v1/ports":       func(*http.Request) (any, error) { return n.Ports(), nil },
		"POST /v1/publish": func(r *http.Request) (any, error) {
			var req api.PublishRequest
			if err := decodeBody(r, &req); err != nil {
				return nil, err
			}
			return n.Publish(req)
		},
		"DELETE /v1/publish": func(r *http.Request) (any, error) {
			var req api.UnpublishRequest
			if err := decodeBody(r, &req); err != nil {
				return nil, err
			}
			return nil, n.Unpublish(req)
		},
		"GET /v1/guests": func(*http.Request) (any, error) { return n.Guests() },
		"POST /v1/guests": func(r *http.Request) (any, error) {
			var req api.GuestRequest
			if err := decodeBody(r, &req); err != nil {
				return nil, err
			}
			return n.AddGuest(r.Context(), req)
		},
		"DELETE /v1/guests/{name}": func(r *http.Request) (any, error) { return nil, n.RemoveGuest(r.Context(), r.PathValue("name")) },
	}
	n.userspaceRoutes(routes)
	mux := http.NewServeMux()
	paths := map[string]bool{}
	for pattern, fn := range routes {
		mux.Handle(pattern, serveEndpoint(fn))
		_, path, _ := strings.Cut(pattern, " ")
		paths[path] = true
	}
	mux.HandleFunc("GET /v1/events", n.handleEvents)
	mux.HandleFunc("GET /metrics", n.handleMetrics)
	paths["/v1/events"], paths["/metrics"] = true, true
	// A known path with another method: the pattern without a method
	// matches what the ones with a method do not.
	for path := range paths {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, api.Errorf(api.CodeMethodNotAllow, "%s not allowed on %s", r.Method, r.URL.Path))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, api.Errorf(api.CodeNotFound, "no endpoint %s", r.URL.Path))
	})
	return mux
}

// serveEndpoint answers a request with fn's value as JSON (204 for nil) or
// its error.
func serveEndpoint(fn endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if v == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		ae = api.Errorf(api.CodeInternal, "%v", err)
	}
	if ae.Status == 0 {
		ae.Status = api.StatusOf(ae.Code)
	}
	writeJSON(w, ae.Status, ae)
}

// decodeBody reads a JSON request body into v: at most api.MaxBodyBytes,
// unknown fields refused, exactly one JSON value.
func decodeBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxBodyBytes+1))
	if err != nil {
		return api.Errorf(api.CodeBadRequest, "read body: %v", err)
	}
	if len(body) > api.MaxBodyBytes {
		return api.Errorf(api.CodeTooLarge, "body over %d bytes", api.MaxBodyBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(api.CodeBadRequest, "body is not a valid request: %v", err)
	}
	if dec.More() {
		return api.Errorf(api.CodeBadRequest, "body has more than one JSON value")
	}
	return nil
}

func (n *Node) handleDown(r *http.Request) (any, error) {
	var req api.DownRequest
	if r.ContentLength != 0 {
		if err := decodeBody(r, &req); err != nil {
			return nil, err
		}
	}
	n.log.Info("down requested over the control socket", "purge", req.Purge)
	go func() {
		// Answer first; the server shuts down inside Leave.
		time.Sleep(100 * time.Millisecond)
		n.Leave(5*time.Second, req.Purge)
	}()
	return map[string]string{"status": "leaving"}, nil
}

// handleEvents streams events as newline-delimited JSON until the client goes
// away or the node stops.
func (n *Node) handleEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, api.Errorf(api.CodeMethodNotAllow, "%s not allowed on %s", r.Method, r.URL.Path))
		return
	}
	ch, lost, cancel := n.events.subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-n.stop:
			return
		case ev := <-ch:
			if d := lost(); d > 0 {
				enc.Encode(api.Event{Time: ev.Time, Type: api.EventDropped, Message: fmt.Sprintf("%d events lost: this reader was too slow", d)})
			}
			if err := enc.Encode(ev); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}
