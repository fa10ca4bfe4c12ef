"""The flows pane: a tree of quota nodes, root flows and their children, one status line per flow."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui.model import FlowIndex, flow_label


class FlowTree(Tree[str]):
    """Rebuilt only when the set of shown flows changes; otherwise its labels are updated in place."""

    class FlowHighlighted(Message):
        """The cursor moved to a flow (``None``: to a quota node)."""

        def __init__(self, flow_id: str | None) -> None:
            super().__init__()
            self.flow_id = flow_id

    def __init__(self, **kwargs: object) -> None:
        super().__init__("flows", **kwargs)  # type: ignore[arg-type]
        self.show_root = False
        self.guide_depth = 2
        self._flow_nodes: dict[str, TreeNode[str]] = {}
        self._shape: tuple[tuple[str, str], ...] | None = None
        self._collapsed: set[str] = set()

    @property
    def flow_ids(self) -> list[str]:
        """The flows shown, in tree order."""
        return list(self._flow_nodes)

    def show(self, index: FlowIndex, visible: set[str], now: float, selected: str | None) -> None:
        shape = tuple(sorted((fid, str(index.flows[fid].get("parent") or index.flows[fid].get("quota")))
                             for fid in visible if fid in index.flows))
        if shape == self._shape:
            for flow_id, node in self._flow_nodes.items():
                if flow_id in index.flows:
                    node.set_label(flow_label(index.flows[flow_id], now))
            return
        self._shape = shape
        self.clear()
        self._flow_nodes = {}
        roots = [flow for flow in index.roots() if flow["id"] in visible]
        for quota, flows in index.by_quota(roots).items():
            group = self.root.add(Text(quota, style="bold"), data="", expand=f"quota:{quota}" not in self._collapsed)
            for flow in flows:
                self._add(group, flow, index, visible, now)
        self.select_flow(selected)

    def _add(self, parent: TreeNode[str], flow: dict[str, object], index: FlowIndex, visible: set[str],
             now: float) -> None:
        flow_id = str(flow["id"])
        children = [child for child in index.children(flow_id) if child["id"] in visible]
        node = parent.add(flow_label(flow, now), data=flow_id, expand=flow_id not in self._collapsed,
                          allow_expand=bool(children))
        self._flow_nodes[flow_id] = node
        for child in children:
            self._add(node, child, index, visible, now)

    def select_flow(self, flow_id: str | None) -> bool:
        """Put the cursor on a flow (expanding its ancestors); False when it is not shown."""
        node = self._flow_nodes.get(flow_id or "")
        if node is None:
            return False
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        self._tree_lines  # lay the lines out now, so the node knows its line before the cursor moves
        self.move_cursor(node)
        return True

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        event.stop()
        self.post_message(self.FlowHighlighted(event.node.data or None))

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed[str]) -> None:
        self._collapsed.add(self._key(event.node))

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[str]) -> None:
        self._collapsed.discard(self._key(event.node))

    @staticmethod
    def _key(node: TreeNode[str]) -> str:
        return node.data or f"quota:{node.label}"
