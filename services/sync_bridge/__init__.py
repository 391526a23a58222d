"""The sync bridge: the only component that reads and writes both partners' topics. It keeps the
registry of links and mirrors items between linked tickets."""
