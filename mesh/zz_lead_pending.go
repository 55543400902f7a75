package mesh

// Placeholder on the lead's node branch only: the API the mesh engineer is
// building. Deleted when branch mesh lands.

import (
	"context"
	"net/netip"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
)

type Event struct{}
type KnownPeer struct{}

func (m *Mesh) Subscribe() (<-chan Event, func())       { panic("pending") }
func (m *Mesh) KnownPeers() []KnownPeer                 { panic("pending") }
func (m *Mesh) LocalName() string                       { panic("pending") }
func (m *Mesh) Join(addrs []string) (int, error)        { panic("pending") }
func GenerateKey() ([]byte, error)                      { panic("pending") }
func EncodeKey([]byte) string                           { panic("pending") }
func LoadKeyFile(path string) ([]byte, error)           { panic("pending") }
func (s *Store) Put(kind, key string, v []byte) Record  { panic("pending") }
func (s *Store) Delete(kind, key string) (Record, bool) { panic("pending") }
func (s *Store) List(kind string) []Record              { panic("pending") }

type ClaimerConfig struct {
	Node, Name string
	Grace      time.Duration
	RenewEvery time.Duration
	Preferred  netip.Prefix
	Stored     *ipam.Claim
}
type ClaimChange struct{ Old, New, Winner ipam.Claim }
type Claimer struct{}

func NewClaimer(m *Mesh, pool *ipam.Pool, cfg ClaimerConfig) *Claimer { panic("pending") }
func (c *Claimer) Acquire(ctx context.Context) (ipam.Claim, error)    { panic("pending") }
func (c *Claimer) Current() ipam.Claim                                { panic("pending") }
func (c *Claimer) Changes() <-chan ClaimChange                        { panic("pending") }
func (c *Claimer) Release()                                           { panic("pending") }
func (c *Claimer) Holders() map[netip.Prefix]ipam.Claim               { panic("pending") }
func (m *Mesh) Alive(name string) bool                                { panic("pending") }
