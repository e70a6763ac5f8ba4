"""The Qwen3-VL instruct chat format (Jinja), for the tiny Qwen3-VL stand-in.

Qwen3-VL's instruct checkpoints render turns as Qwen2-VL's do (``<|im_start|>{role}\\n{content}<|im_end|>\\n``,
image parts as ``<|vision_start|><|image_pad|><|vision_end|>``, ``<|im_start|>assistant\\n`` as the generation
prompt) with one visible difference: there is **no default system turn**; a system turn appears only when the
conversation starts with one. Their tool-calling and video-timestamp branches are left out: the recipes use
neither. (Its tokenizer also makes ``<think>``/``</think>`` single, non-special tokens: see `data_prep.tiny_model`.)
"""

QWEN3VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
