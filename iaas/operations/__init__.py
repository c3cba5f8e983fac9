"""Operations: what runs the business across contexts (health, reconciliation, demo
data). Part of the composition root: it may read every context, always through its
contract."""
