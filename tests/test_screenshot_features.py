"""Screenshots in the editor features: images read safely and only inside the workspace,
put on the training canvas, snippets of the workspace ranked in the joint space, the
"Insert code from screenshot" action and the image hover; end-to-end over stdio too."""
import ast
import random
from pathlib import Path

import numpy as np
import pytest
import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import ClientServerConfig, LanguageClient

from cromwell_lsp.features import actions, hover, screenshot
from cromwell_lsp.model import images
from cromwell_lsp.settings import Settings
from tests.server_helpers import SERVER, tiny_model, tiny_model_path  # noqa: F401

pytest.importorskip("pygments")

SHOWN = "def add(a, b):\n    return a + b\n"
OTHER = ('import math\n\n\n@staticmethod\ndef area(r):\n    return math.pi * r * r\n\n\n'
         'class Stack:\n    def push(self, x):\n        self.items.append(x)\n')


def _workspace(tmp_path: Path) -> Path:
    from cromwell_lsp.training.screenshots import render

    ws = tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "shapes.py").write_text(OTHER)
    (ws / "pkg" / "maths.py").write_text(SHOWN)
    (ws / "node_modules").mkdir()
    (ws / "node_modules" / "skip.py").write_text("x = 1\n")
    render(SHOWN, random.Random(1), style="default", font_size=12).save(ws / "shot.png")
    (ws / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "outside.png").write_bytes((ws / "shot.png").read_bytes())
    return ws


# ---- images ---------------------------------------------------------------------------
def test_resolve_image_inside_the_workspace_only(tmp_path):
    ws = _workspace(tmp_path)
    doc = ws / "pkg" / "notes.py"
    assert screenshot.resolve_image("../shot.png", doc, [ws]) == (ws / "shot.png").resolve()
    assert screenshot.resolve_image("shot.png", doc, [ws]) == (ws / "shot.png").resolve()
    with pytest.raises(ValueError, match="outside the workspace"):
        screenshot.resolve_image("../../outside.png", doc, [ws])
    with pytest.raises(ValueError, match="outside the workspace"):
        screenshot.resolve_image(str(tmp_path / "outside.png"), doc, [ws])
    with pytest.raises(ValueError, match="no such image"):
        screenshot.resolve_image("missing.png", doc, [ws])
    with pytest.raises(ValueError, match="not a supported image"):
        screenshot.resolve_image("notes.txt", doc, [ws])


def test_open_image_reports_bad_files(tmp_path, monkeypatch):
    ws = _workspace(tmp_path)
    with pytest.raises(ValueError, match="broken.png"):
        images.open_image(ws / "broken.png")
    (ws / "cut.png").write_bytes((ws / "shot.png").read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.png"):
        images.open_image(ws / "cut.png")
    with pytest.raises(ValueError, match="cannot read image"):
        images.open_image(ws / "none.png")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match="pixels"):
        images.open_image(ws / "shot.png")


def test_screenshot_canvas_is_the_training_layout(tmp_path):
    from PIL import Image

    im = Image.new("RGB", (300, 60), (250, 240, 230))
    im.paste((0, 0, 0), (10, 10, 200, 30))
    c = images.screenshot_canvas(im, 96)
    assert c.shape == (96, 96, 3) and c.dtype == np.float32
    corner = np.array([250, 240, 230], np.float32) / 127.5 - 1
    np.testing.assert_allclose(c[-1, -1], corner, atol=1e-6)   # filled with the corner colour
    assert c[:20].min() < -0.9                                  # the dark bar, scaled to fit
    assert -1.0 <= c.min() and c.max() <= 1.0


# ---- snippets and ranking ---------------------------------------------------------------
def test_snippets_of_python_and_of_text_that_does_not_parse():
    names = [(s.name, s.line, s.end_line) for s in screenshot.snippets_of("a.py", OTHER)]
    assert names == [("def area", 3, 5), ("class Stack", 8, 10), ("def push", 9, 10)]
    broken = "def f(:\n" + "x = 1\n" * 20
    windows = screenshot.snippets_of("b.py", broken)
    assert [s.name for s in windows] == ["lines 1-12", "lines 13-22"]


def test_workspace_files_skip_dependency_folders(tmp_path):
    ws = _workspace(tmp_path)
    found = [p.relative_to(ws).as_posix() for p in screenshot.workspace_python_files([ws])]
    assert found == ["pkg/maths.py", "pkg/shapes.py"]


def test_nearest_ranks_by_joint_space_similarity(tiny_model):  # noqa: F811
    snippets = screenshot.snippets_of("a.py", OTHER) + screenshot.snippets_of("b.py", SHOWN)
    index = screenshot.SnippetIndex()
    target = next(s for s in snippets if s.name == "def add")
    best = index.nearest(tiny_model, tiny_model.embed_text(target.text), snippets, k=2)
    assert best[0][1] == target and best[0][0] == pytest.approx(1.0, abs=1e-4)
    assert best[0][0] >= best[1][0]
    assert len(index._vectors) == len(snippets)          # each text embedded once
    index.nearest(tiny_model, tiny_model.embed_text(target.text), snippets)
    assert len(index._vectors) == len(snippets)          # and served from the cache after


# ---- features on the tiny model -----------------------------------------------------------
def test_explain_image_links_workspace_code(tmp_path, tiny_model):  # noqa: F811
    ws = _workspace(tmp_path)
    md = screenshot.explain_image(tiny_model, ws / "shot.png", [ws], Settings(max_tokens=8))
    assert md.startswith("**Screenshot** `shot.png`")
    links = [l for l in md.split("\n") if l.startswith("- [")]
    assert len(links) == 3
    assert all("file://" in l and "#L" in l for l in links)
    assert not any("node_modules" in l for l in links)
    assert "<|" not in md


def test_explain_image_uses_the_open_document_text(tmp_path, tiny_model):  # noqa: F811
    ws = _workspace(tmp_path)
    unsaved = (ws / "pkg" / "maths.py").as_uri()
    md = screenshot.explain_image(tiny_model, ws / "shot.png", [ws], Settings(max_tokens=8),
                                  documents={unsaved: "def only_in_the_editor():\n    pass\n"},
                                  k=50)  # every snippet listed: a random model ranks at random
    assert "only_in_the_editor" in md and "def add" not in md


def test_screenshot_action_listed_and_resolved(tmp_path, tiny_model):  # noqa: F811
    ws = _workspace(tmp_path)
    text = "import os\n    # from ![add](shot.png)\nx = 1\n"
    listed = actions.list_actions(text, 1, 1)
    assert [(a.kind, a.line) for a in listed] == [("screenshot", 1)]
    assert listed[0].title == "Insert code from screenshot shot.png"
    settings = Settings(max_tokens=8)
    edit = actions.resolve(tiny_model, None, listed[0], text, settings,
                           doc_path=ws / "notes.py", roots=[ws])
    if edit is not None:  # a random model may read nothing; when it reads, it inserts below
        assert edit.start == edit.end == text.index("\nx = 1")
        assert edit.text.startswith("\n    ") and "<|" not in edit.text
    md_edit = actions.resolve(tiny_model, None, listed[0], text, settings,
                              doc_path=ws / "README.md", roots=[ws])
    if md_edit is not None:
        assert md_edit.text.startswith("\n    ```python\n") and md_edit.text.endswith("```")
    with pytest.raises(ValueError, match="outside the workspace"):
        actions.resolve(tiny_model, None, actions.Action("t", "screenshot", 0),
                        "# ![x](../outside.png)\n", settings, doc_path=ws / "a.py", roots=[ws])


def test_hover_on_image_reports_problems_in_words(tmp_path, tiny_model):  # noqa: F811
    ws = _workspace(tmp_path)
    s = Settings(max_tokens=8)
    for ref, why in (("broken.png", "not an image"), ("../outside.png", "outside the workspace"),
                     ("gone.png", "no such image")):
        text = f'IMG = "{ref}"\n'
        md = hover.hover_text(tiny_model, None, text, 0, 8, s, doc_path=ws / "m.py", roots=[ws])
        assert why in md, md


# ---- end to end over stdio -------------------------------------------------------------------
WS_CONFIG = ClientServerConfig(server_command=SERVER.server_command, server_env=SERVER.server_env)


@pytest.fixture
def workspace(tmp_path):
    return _workspace(tmp_path)


@pytest_lsp.fixture(config=WS_CONFIG)
async def client(lsp_client: LanguageClient, tiny_model_path, workspace):  # noqa: F811
    folder = T.WorkspaceFolder(uri=workspace.as_uri(), name="ws")
    await lsp_client.initialize_session(T.InitializeParams(
        capabilities=T.ClientCapabilities(), root_uri=workspace.as_uri(), workspace_folders=[folder],
        initialization_options={"modelPath": str(tiny_model_path), "maxTokens": 8,
                                "debounceMs": 0, "threads": 1}))
    yield
    await lsp_client.shutdown_session()


async def test_server_image_hover_and_screenshot_action(client: LanguageClient, workspace):
    uri = (workspace / "notes.md").as_uri()
    text = "# Notes\n\n![the add function](shot.png)\n"
    client.text_document_did_open(T.DidOpenTextDocumentParams(
        T.TextDocumentItem(uri=uri, language_id="markdown", version=1, text=text)))
    hov = await client.text_document_hover_async(T.HoverParams(
        text_document=T.TextDocumentIdentifier(uri=uri), position=T.Position(2, 25)))
    value = hov.contents.value
    assert value.startswith("**Screenshot** `shot.png`")
    # links to workspace code (which snippet ranks first is the random model's luck)
    assert (workspace / "pkg").as_uri() + "/" in value and "#L" in value
    listed = await client.text_document_code_action_async(T.CodeActionParams(
        text_document=T.TextDocumentIdentifier(uri=uri), range=T.Range(T.Position(2, 0), T.Position(2, 0)),
        context=T.CodeActionContext(diagnostics=[])))
    shot = [a for a in listed if a.title.startswith("Insert code from screenshot")]
    assert len(shot) == 1 and shot[0].edit is None              # listed without the model
    resolved = await client.code_action_resolve_async(shot[0])
    if resolved.edit is not None:
        (edit,) = resolved.edit.changes[uri]
        assert edit.range.start == T.Position(2, len(text.split("\n")[2]))
        assert edit.new_text.startswith("\n```python\n")
