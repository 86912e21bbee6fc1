"""The README's table of supported layers is the registry's."""
from pathlib import Path

from lipcert.rules import registry


def test_readme_layer_table_matches_registry():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    table = text.split("<!-- layers:begin -->\n", 1)[1].split("<!-- layers:end -->", 1)[0]
    assert table == registry.markdown_table(), "regenerate with: python -c 'from lipcert.rules import registry; " \
                                              "print(registry.markdown_table())'"
