"""The primitives every layer uses, importing nothing above them: errors, atomic files, safe
paths, images, masks, instances, score maps, stage records, id lists, prompt sets, devices,
plain values for YAML/JSON, and the component declarations."""
