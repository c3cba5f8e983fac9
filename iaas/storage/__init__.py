"""Storage: block volumes, sold out of a wallet by the selling-context kit (iaas.spending)."""
