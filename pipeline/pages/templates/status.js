window.addEventListener('load',function(){var ok=0,bad=0;
document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0){ok++}else{bad++}});
document.body.setAttribute('data-images-ok',ok);document.body.setAttribute('data-images-broken',bad);
document.body.setAttribute('data-bars',document.querySelectorAll('svg rect.bar').length);
var tw=0;document.querySelectorAll('table').forEach(function(t){tw=Math.max(tw,t.getBoundingClientRect().right)});
document.body.setAttribute('data-table-right',Math.ceil(tw));
document.body.setAttribute('data-scroll-width',document.documentElement.scrollWidth);
document.body.setAttribute('data-render','done');});
