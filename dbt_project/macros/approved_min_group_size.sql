{#-
  The smallest group a mart may publish, read from the model's approval record
  (`config: meta: approval: min_group_size:` in its YAML), so the threshold the Data Protection Officer
  approved is the one the SQL enforces. At parse time dbt has no config values yet, so it renders a
  placeholder that is never executed.
-#}
{% macro approved_min_group_size() -%}
  {%- if not execute -%}
    {{ return(0) }}
  {%- endif -%}
  {%- set approval = config.meta_get('approval') -%}
  {%- if approval is not mapping or approval.get('min_group_size') is not integer -%}
    {{ exceptions.raise_compiler_error(
        "model " ~ model.name ~ " uses approved_min_group_size() but has no integer approval.min_group_size in its meta"
    ) }}
  {%- endif -%}
  {{ return(approval['min_group_size']) }}
{%- endmacro %}
